//! Names for numeric routing identifiers, as iproute2 prints them.

use super::table;

/// The name of a routing table: `main`, `local`, `default`, or its number.
pub fn table_name(id: u32) -> String {
    match id {
        table::MAIN => "main".to_owned(),
        table::LOCAL => "local".to_owned(),
        table::DEFAULT => "default".to_owned(),
        other => other.to_string(),
    }
}

/// The name of a route protocol (`RTPROT_*`), or its number.
pub fn protocol_name(protocol: u8) -> String {
    let name = match protocol {
        0 => "unspec",
        1 => "redirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        8 => "gated",
        9 => "ra",
        10 => "mrt",
        11 => "zebra",
        12 => "bird",
        13 => "dnrouted",
        14 => "xorp",
        15 => "ntk",
        16 => "dhcp",
        17 => "mrouted",
        18 => "keepalived",
        42 => "babel",
        99 => "openr",
        186 => "bgp",
        187 => "isis",
        188 => "ospf",
        189 => "rip",
        192 => "eigrp",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// The name of a route scope (`RT_SCOPE_*`), or its number.
pub fn scope_name(scope: u8) -> String {
    match scope {
        0 => "global".to_owned(),
        200 => "site".to_owned(),
        253 => "link".to_owned(),
        254 => "host".to_owned(),
        255 => "nowhere".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_iproute2() {
        assert_eq!(table_name(254), "main");
        assert_eq!(table_name(255), "local");
        assert_eq!(table_name(10001), "10001");
        assert_eq!(protocol_name(16), "dhcp");
        assert_eq!(protocol_name(2), "kernel");
        assert_eq!(protocol_name(200), "200");
        assert_eq!(scope_name(253), "link");
        assert_eq!(scope_name(0), "global");
    }
}
