//! The kernel BTF reader behind drop reasons: parsing, member offsets through
//! anonymous members and typedefs, enum names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routemon::ebpf::{btf::Btf, drops::DropSetup};

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data.to_vec()) {
        let _ = btf.member_offset("sk_buff", &["dev"]);
        let _ = btf.member_offset("net", &["ns", "inum"]);
        let _ = btf.member_is_pointer("sk_buff", "dev");
        let _ = btf.enum_values("skb_drop_reason");
        let _ = DropSetup::from_btf(&btf, 4_026_531_840);
    }
});
