//! Keeps the server's memory out of core files and away from other processes of its user.
//!
//! Unwrapped key material (the cache), the HSM PIN and each request's derived keys and plaintext
//! live in this process's memory, and some of it outlives its use on worker stacks (see
//! docs/ARCHITECTURE.md, "Material cached as zeroizing bytes"). A core file would write all of
//! that to disk, readable by whoever collects crashes; and a process of the same user could read
//! it live through ptrace or /proc/PID/mem. ssh-agent and gpg-agent close both the same way.

use rustix::process::{setrlimit, Resource, Rlimit};

/// Sets the core-file size limit to 0 (soft and hard, so no child or later call raises it) and
/// marks the process not dumpable, which also refuses ptrace attach and /proc/PID/mem, fd and
/// environ reads to processes without CAP_SYS_PTRACE. Called before the PIN is read.
pub fn forbid() -> Result<(), String> {
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, none).map_err(|e| format!("cannot set the core-file size limit to 0: {e}"))?;
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("cannot mark the process not dumpable (PR_SET_DUMPABLE): {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::getrlimit;

    #[test]
    fn forbid_turns_core_files_and_ptrace_off() {
        // This test process is dumpable, as every process starts; afterwards it is not (harmless
        // to the other tests: it only refuses core files and foreign ptrace).
        forbid().unwrap();
        let limit = getrlimit(Resource::Core);
        assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
        #[cfg(target_os = "linux")]
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
