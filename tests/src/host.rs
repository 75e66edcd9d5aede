//! The host as a new machine sees it, private to one test binary.
//!
//! routemon writes to paths of the host by default (`/sys/fs/bpf/routemon`,
//! `/var/lib/routemon`, `/etc/systemd/network`), and a development machine has
//! state there that a new machine does not (a mounted BPF filesystem, an earlier
//! run's pin state). A test must neither depend on that state nor leave any behind,
//! so every integration-test binary starts, before `main` and while it still has a
//! single thread, in a private mount namespace ([`new_machine_view!`]) where:
//!
//! - `/sys/fs/bpf` is a fresh, empty BPF filesystem (mounted, as systemd mounts it
//!   at boot on every real node, but holding nothing of the host's);
//! - `/var/lib` is an overlay whose writes go to memory, with no `routemon` in it;
//! - `/etc/systemd/network` and `/run/routemon` (where they exist) are empty;
//!   where `/run/routemon` does not exist, `RUNTIME_DIRECTORY` points routemon at
//!   one in the private `/tmp`;
//! - `/tmp` is an empty tmpfs (scratch directories, tmux sockets).
//!
//! Every process a test starts inherits that view, and it all goes away with the
//! test binary: nothing a test writes under these paths reaches the host, however
//! the test ends.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
};

/// The outcome of [`enter_new_machine_view`], read by [`require_new_machine_view`].
static VIEW: OnceLock<Result<(), String>> = OnceLock::new();

/// Where the `/var/lib` overlay keeps its writes (inside the private `/tmp`).
const OVERLAY_SCRATCH: &str = "/tmp/.routemon-test-host";

/// Runs a test binary in its own [new-machine view](self) of the host.
///
/// Put `routemon_testbed::new_machine_view!();` once at the top of every
/// integration-test file: it registers [`enter_new_machine_view`] to run before
/// `main`, when the process has one thread (a mount namespace cannot be entered
/// later: the test harness's threads share the filesystem context).
#[macro_export]
macro_rules! new_machine_view {
    () => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static ENTER_NEW_MACHINE_VIEW: extern "C" fn() = {
            extern "C" fn enter() {
                $crate::host::enter_new_machine_view();
            }
            enter
        };
    };
}

/// Enters the private mount namespace described in the [module docs](self).
/// Called before `main` by [`new_machine_view!`]; never panics (a panic there
/// aborts the process without a message). Without root it does nothing: the tests
/// then fail on [`crate::cmd::require_root`].
pub fn enter_new_machine_view() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let _ = VIEW.set(set_up());
}

/// Fails the test unless the binary runs in its new-machine view.
pub fn require_new_machine_view() {
    match VIEW.get() {
        Some(Ok(())) => {}
        Some(Err(err)) => panic!("could not give this test binary a new machine's view: {err}"),
        None => panic!(
            "this test binary does not run in a new machine's view of the host: add \
             `routemon_testbed::new_machine_view!();` to its file"
        ),
    }
}

fn set_up() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    // Nothing mounted from here on propagates back to the host.
    mount_or(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    mount_or(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=1777"),
    )?;
    mount_or(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )?;
    overlay_in_memory(Path::new("/var/lib"))?;
    remove_in_overlay(Path::new("/var/lib/routemon"))?;
    for dir in ["/etc/systemd/network", "/run/routemon"] {
        if Path::new(dir).is_dir() {
            mount_or(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=0755"),
            )?;
        }
    }
    if !Path::new("/run/routemon").is_dir() {
        // routemon's runtime directory would be created on the host's /run: the
        // routemons this binary starts use one in the private /tmp instead (the
        // variable systemd sets for a unit's RuntimeDirectory=).
        // SAFETY: before main, while the process has one thread.
        unsafe { std::env::set_var("RUNTIME_DIRECTORY", "/tmp/routemon-runtime") };
    }
    Ok(())
}

/// Mounts an overlay on `dir` whose upper layer lives in the private `/tmp`: reads
/// see the host's files, writes stay in this namespace.
fn overlay_in_memory(dir: &Path) -> Result<(), String> {
    let scratch = PathBuf::from(OVERLAY_SCRATCH).join(dir.strip_prefix("/").unwrap_or(dir));
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.display(),
        upper.display(),
        work.display()
    );
    mount_or(
        Some("overlay"),
        &dir.to_string_lossy(),
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
    )
}

/// Removes `path` as seen through an overlay (a whiteout: the host keeps it).
fn remove_in_overlay(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(format!("hiding the host's {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

fn mount_or(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        format!(
            "mounting {} on {target}: {e}",
            fstype.or(source).unwrap_or("(propagation)")
        )
    })
}
