//! The kernel's walls around a render worker, raised by the worker on itself before it reads any tenant content
//! and before it has a second thread (Landlock and seccomp bind the calling thread and the threads and processes
//! it starts afterwards, never the ones already running):
//!
//! - **Landlock** (filesystem): read the exported tree and nothing else; read and execute exactly the renderer
//!   binaries (kustomize, helm); read, write and create only in a fresh scratch directory; `/dev/null`. Every
//!   other path, `/proc` included, is refused by the kernel, whatever the file modes say and whoever the user is.
//! - **Landlock** (network, ABI 4+): no TCP bind or connect. Scopes (ABI 6+): no signal to, and no abstract Unix
//!   socket of, a process outside the sandbox.
//! - **seccomp**: `socket()` refused for every family (the network, loopback and netlink included), and the
//!   calls that would leave or widen the sandbox: new namespaces, `setsid`/`setpgid` (so every descendant stays
//!   in the process group the controller kills), `ptrace`, `io_uring` (which could open sockets around the
//!   filter), mounts, keyrings, BPF, raising resource limits.
//! - **Resource limits** (set first): data size (memory), CPU time, file size, open files, processes, no core
//!   dumps; and `no_new_privs`, so nothing executed can gain privileges; as root, every capability is dropped.
//!
//! Raw system calls through `libc`, so the whole policy is in this one file and readable as a list.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the worker may touch, and how much it may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Read-only: the exported tree of the revision (or the decryption copy of it).
    pub read: Vec<PathBuf>,
    /// Read and execute: the renderer binaries, as real paths.
    pub execute: Vec<PathBuf>,
    /// Read, write, create and remove: the scratch directory.
    pub scratch: PathBuf,
    pub limits: Limits,
    /// When the controller runs as root: the unprivileged user the worker becomes (its processes are then
    /// counted against the process limit, which the kernel never applies to uid 0). It keeps one capability,
    /// reading past file modes, so it can still read the tree; Landlock decides what it may read.
    pub run_as: Option<u32>,
}

/// The user a worker started by root becomes: `nobody`.
pub const UNPRIVILEGED_UID: u32 = 65534;

/// Resource limits of the worker and every process it starts (each process has its own count of memory, CPU
/// time and file size; processes are counted per user).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_DATA: heap and other private writable memory per process. Go reserves address space it never
    /// uses, so the address-space limit (`RLIMIT_AS`) is set higher, as a backstop.
    pub memory_bytes: u64,
    /// RLIMIT_CPU per process, seconds.
    pub cpu_seconds: u64,
    /// RLIMIT_FSIZE: the largest file any process may write.
    pub file_bytes: u64,
    /// Processes (and threads) beyond those the user already runs (RLIMIT_NPROC; the kernel does not apply it
    /// to uid 0).
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            cpu_seconds: 120,
            file_bytes: 64 << 20,
            processes: 128,
        }
    }
}

/// Which walls are up: reported by every worker, shown by `/readyz`, `ferry version` and a metric.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walls {
    /// The Landlock ABI the kernel offers (0: none; filesystem rules need 1, TCP rules 4, scopes 6).
    pub landlock_abi: u32,
    pub landlock_fs: bool,
    pub landlock_net: bool,
    pub landlock_scopes: bool,
    pub seccomp: bool,
    pub no_new_privs: bool,
    pub limits: bool,
    /// The uid the renderers run as.
    pub uid: u32,
    /// Why a wall could not be raised, for the message of a refused render.
    pub problems: Vec<String>,
}

impl Walls {
    /// Whether running a renderer (kustomize, helm) is safe: the filesystem and the network are both closed.
    pub fn holds(&self) -> bool {
        self.landlock_fs && self.seccomp && self.no_new_privs && self.limits
    }

    /// One line, for logs and `ferry version`.
    pub fn summary(&self) -> String {
        if self.holds() {
            let mut s = format!(
                "landlock (ABI {}) + seccomp + limits, as uid {}",
                self.landlock_abi, self.uid
            );
            if !self.landlock_net {
                s.push_str(" (no Landlock TCP rules: seccomp alone closes the network)");
            }
            s
        } else {
            format!("unavailable: {}", self.problems.join("; "))
        }
    }
}

/// Raises every wall it can, in order: limits, `no_new_privs` (and capabilities dropped), Landlock, seccomp.
/// Never fails: what could not be raised is in [`Walls::problems`], and the caller decides.
pub fn confine(policy: &Policy) -> Walls {
    let mut walls = Walls::default();
    // SAFETY: no arguments.
    let uid = policy.run_as.unwrap_or_else(|| unsafe { libc::getuid() });
    match set_limits(&policy.limits, uid) {
        Ok(()) => walls.limits = true,
        Err(e) => walls.problems.push(format!("resource limits: {e}")),
    }
    match policy.run_as {
        Some(uid) => {
            if let Err(e) = become_user(uid, &policy.scratch) {
                walls.limits = false;
                walls.problems.push(format!("becoming uid {uid}: {e}"));
            }
        }
        None => drop_capabilities(),
    }
    // SAFETY: no arguments.
    walls.uid = unsafe { libc::getuid() };
    // The first process the kernel kills when memory runs short: a render, never the controller (children
    // inherit it; after Landlock nothing can lower it again). Written while /proc/self is still ours.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    // Not dumpable: a renderer of the same user cannot take the worker's file descriptors (its answer pipe)
    // or read its memory.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0 {
        walls.no_new_privs = true;
    } else {
        walls
            .problems
            .push(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    walls.landlock_abi = landlock::abi();
    if walls.landlock_abi == 0 {
        walls
            .problems
            .push("the kernel has no Landlock (Linux 5.13+ with landlock in the lsm= list)".to_string());
    } else {
        match landlock::restrict(policy, walls.landlock_abi) {
            Ok(()) => {
                walls.landlock_fs = true;
                walls.landlock_net = walls.landlock_abi >= 4;
                walls.landlock_scopes = walls.landlock_abi >= 6;
            }
            Err(e) => walls.problems.push(format!("Landlock: {e}")),
        }
    }
    match seccomp::install() {
        Ok(()) => walls.seccomp = true,
        Err(e) => walls
            .problems
            .push(format!("seccomp: {e} (a container runtime's profile may refuse it)")),
    }
    walls
}

fn set_limits(limits: &Limits, uid: u32) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::RLIMIT_DATA, limits.memory_bytes)?;
    set(libc::RLIMIT_AS, limits.memory_bytes.saturating_mul(4).max(4 << 30))?;
    set(libc::RLIMIT_CPU, limits.cpu_seconds)?;
    set(libc::RLIMIT_FSIZE, limits.file_bytes)?;
    set(libc::RLIMIT_NOFILE, 4096)?;
    set(libc::RLIMIT_CORE, 0)?;
    set(libc::RLIMIT_NPROC, user_tasks(uid).saturating_add(limits.processes))?;
    Ok(())
}

/// Tasks (threads count: the kernel counts them against RLIMIT_NPROC) that `uid` runs now, so the process
/// limit means "this many more". Read from `/proc` before Landlock closes it.
fn user_tasks(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        if !entry.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("Uid:") == Some(u64::from(uid)) {
            total += field("Threads:").unwrap_or(1);
        }
    }
    total
}

/// CAP_DAC_READ_SEARCH: read any file and search any directory, whatever its mode.
const CAP_DAC_READ_SEARCH: u32 = 2;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this process's capabilities to exactly `caps` (bits of the first word: capabilities 0-31).
fn set_capabilities(caps: u32) -> std::io::Result<()> {
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    data[0] = CapData {
        effective: caps,
        permitted: caps,
        inheritable: caps,
    };
    // SAFETY: a valid header and two data words.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The highest capability this kernel knows (`/proc/sys/kernel/cap_last_cap`), read before Landlock.
fn last_capability() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Root becomes `uid`, keeping only CAP_DAC_READ_SEARCH (ambient, so kustomize and helm keep it too): the
/// tree stays readable whatever its modes, the scratch directory becomes the user's, and every process of the
/// render counts against the process limit.
fn become_user(uid: u32, scratch: &Path) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let dir = c_path(scratch)?;
    // SAFETY: plain system calls with valid arguments, in a process that is still one thread.
    unsafe {
        check(libc::chown(dir.as_ptr(), uid, uid))?;
        // The bounding set while CAP_SETPCAP is still effective (after setresuid it is not).
        for cap in 0..=libc::c_ulong::from(last_capability()) {
            if cap != CAP_DAC_READ_SEARCH as libc::c_ulong {
                check(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0))?;
            }
        }
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(uid, uid, uid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    set_capabilities(1 << CAP_DAC_READ_SEARCH)?;
    // SAFETY: prctl with integer arguments.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            CAP_DAC_READ_SEARCH as libc::c_ulong,
            0,
            0,
        )
    })?;
    Ok(())
}

/// As root: no capability survives, and `execve` grants none (securebits), so root in the sandbox is a user
/// like any other as far as the kernel's privilege checks go. Best effort; Landlock and seccomp do not depend
/// on it.
fn drop_capabilities() {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED;
    // SAFETY: prctl and capset with valid arguments; failures are ignored (best effort).
    unsafe {
        libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0);
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
    }
    let _ = set_capabilities(0);
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

mod landlock {
    use super::{Policy, c_path};

    const CREATE_RULESET_VERSION: u32 = 1 << 0;
    const RULE_PATH_BENEATH: libc::c_int = 1;

    const EXECUTE: u64 = 1 << 0;
    const WRITE_FILE: u64 = 1 << 1;
    const READ_FILE: u64 = 1 << 2;
    const READ_DIR: u64 = 1 << 3;
    /// Every right of ABI 1 (execute … make symlink).
    const ABI1_ALL: u64 = (1 << 13) - 1;
    const REFER: u64 = 1 << 13;
    const TRUNCATE: u64 = 1 << 14;
    const IOCTL_DEV: u64 = 1 << 15;

    const NET_BIND_TCP: u64 = 1 << 0;
    const NET_CONNECT_TCP: u64 = 1 << 1;
    const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
    const SCOPE_SIGNAL: u64 = 1 << 1;

    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }

    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// The ABI version the kernel offers; 0 without Landlock.
    pub fn abi() -> u32 {
        // SAFETY: the version query takes no attribute.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        u32::try_from(v).unwrap_or(0)
    }

    /// The rights a ruleset handles at `abi`: all of them, so anything not granted below is refused.
    fn handled_fs(abi: u32) -> u64 {
        let mut fs = ABI1_ALL;
        if abi >= 2 {
            fs |= REFER;
        }
        if abi >= 3 {
            fs |= TRUNCATE;
        }
        if abi >= 5 {
            fs |= IOCTL_DEV;
        }
        fs
    }

    pub fn restrict(policy: &Policy, abi: u32) -> Result<(), String> {
        let handled = handled_fs(abi);
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: if abi >= 4 { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // The attribute's size tells the kernel which fields this build knows: older ABIs know fewer.
        let size = match abi {
            1..=3 => std::mem::size_of::<u64>(),
            4..=5 => 2 * std::mem::size_of::<u64>(),
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: a valid attribute of `size` bytes.
        let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr, size, 0u32) };
        if fd < 0 {
            return Err(format!("creating a ruleset: {}", std::io::Error::last_os_error()));
        }
        let fd = fd as libc::c_int;
        let result = (|| {
            let file_rights = READ_FILE | WRITE_FILE | EXECUTE | (handled & (TRUNCATE | IOCTL_DEV));
            for dir in &policy.read {
                allow(fd, dir, READ_FILE | READ_DIR)?;
            }
            for program in &policy.execute {
                allow(fd, program, READ_FILE | EXECUTE)?;
            }
            // The scratch directory: everything but execute (nothing written there is ever run).
            allow(fd, &policy.scratch, handled & !EXECUTE & !IOCTL_DEV)?;
            // Go's os/exec opens /dev/null for the standard streams of what it starts.
            allow(
                fd,
                std::path::Path::new("/dev/null"),
                file_rights & !EXECUTE & !IOCTL_DEV,
            )?;
            // SAFETY: a ruleset fd; no_new_privs is set by the caller.
            if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) } != 0 {
                return Err(format!("restricting: {}", std::io::Error::last_os_error()));
            }
            Ok(())
        })();
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        result
    }

    fn allow(ruleset: libc::c_int, path: &std::path::Path, access: u64) -> Result<(), String> {
        let shown = path.display();
        let c = c_path(path).map_err(|e| format!("{shown}: {e}"))?;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("opening {shown}: {}", std::io::Error::last_os_error()));
        }
        // A rule on a file may only grant the rights that apply to files.
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        let access = if is_dir {
            access
        } else {
            access & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV)
        };
        let rule = PathBeneathAttr {
            allowed_access: access,
            parent_fd: fd,
        };
        // SAFETY: a valid rule for an open fd.
        let r = unsafe { libc::syscall(libc::SYS_landlock_add_rule, ruleset, RULE_PATH_BENEATH, &rule, 0u32) };
        let err = std::io::Error::last_os_error();
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        if r != 0 {
            return Err(format!("a rule for {shown}: {err}"));
        }
        Ok(())
    }
}

mod seccomp {
    //! A classic BPF filter: the architecture checked (anything else is killed), then one comparison per refused
    //! call. Everything not listed is allowed: this is the second wall around the network and the process
    //! group, Landlock is the first around files.

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Instruction {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }

    #[repr(C)]
    struct Program {
        len: u16,
        filter: *const Instruction,
    }

    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;

    const OFFSET_NR: u32 = 0;
    const OFFSET_ARCH: u32 = 4;
    /// The low 32 bits of the first argument (little endian).
    const OFFSET_ARG0_LOW: u32 = 16;

    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

    /// clone() flags that make a new namespace.
    const NEW_NAMESPACES: u32 = 0x0002_0000 // CLONE_NEWNS
        | 0x0200_0000 // CLONE_NEWCGROUP
        | 0x0400_0000 // CLONE_NEWUTS
        | 0x0800_0000 // CLONE_NEWIPC
        | 0x1000_0000 // CLONE_NEWUSER
        | 0x2000_0000 // CLONE_NEWPID
        | 0x4000_0000; // CLONE_NEWNET

    /// Refused with EPERM.
    fn refused() -> Vec<libc::c_long> {
        let mut calls = vec![
            // The network, loopback and netlink included: no socket of any family.
            libc::SYS_socket,
            // Leaving the process group the controller kills as one.
            libc::SYS_setsid,
            libc::SYS_setpgid,
            // Reading or steering other processes.
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            // io_uring can open sockets and files without the calls this filter sees.
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            // New namespaces (a user namespace grants capabilities inside it), mounts.
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_mount_setattr,
            // Files by handle bypass path checks.
            libc::SYS_open_by_handle_at,
            libc::SYS_name_to_handle_at,
            // The kernel's other attack surfaces a renderer never needs.
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_kexec_load,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_acct,
            libc::SYS_syslog,
            // The limits set before the filter stay.
            libc::SYS_setrlimit,
            libc::SYS_prlimit64,
            // Memory RLIMIT_DATA does not count, and SysV segments outlive the process group's kill.
            libc::SYS_shmget,
            libc::SYS_shmat,
            libc::SYS_shmctl,
            libc::SYS_msgget,
            libc::SYS_semget,
            libc::SYS_mq_open,
            libc::SYS_memfd_create,
            // Executing what is not a file Landlock can see; taking another process's descriptors.
            libc::SYS_execveat,
            libc::SYS_pidfd_getfd,
            libc::SYS_kcmp,
        ];
        #[cfg(target_arch = "x86_64")]
        calls.extend([libc::SYS_kexec_file_load, libc::SYS_iopl, libc::SYS_ioperm]);
        calls
    }

    fn stmt(code: u16, k: u32) -> Instruction {
        Instruction { code, jt: 0, jf: 0, k }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
        Instruction { code, jt, jf, k }
    }

    fn program() -> Vec<Instruction> {
        let allow = libc::SECCOMP_RET_ALLOW;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let mut p = vec![
            stmt(LD_W_ABS, OFFSET_ARCH),
            jump(JEQ_K, ARCH, 1, 0),
            stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(LD_W_ABS, OFFSET_NR),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            // The x32 ABI's numbers (bit 30): a second table of calls this filter does not list.
            p.push(jump(JGE_K, 0x4000_0000, 0, 1));
            p.push(stmt(RET_K, eperm));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = JGE_K;
        for nr in refused() {
            p.push(jump(JEQ_K, nr as u32, 0, 1));
            p.push(stmt(RET_K, eperm));
        }
        // clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes libc and Go use clone.
        p.push(jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1));
        p.push(stmt(RET_K, enosys));
        // clone: threads and processes, never a new namespace.
        p.push(jump(JEQ_K, libc::SYS_clone as u32, 0, 3));
        p.push(stmt(LD_W_ABS, OFFSET_ARG0_LOW));
        p.push(jump(JSET_K, NEW_NAMESPACES, 0, 1));
        p.push(stmt(RET_K, eperm));
        p.push(stmt(RET_K, allow));
        p
    }

    pub fn install() -> Result<(), String> {
        let filter = program();
        let prog = Program {
            len: u16::try_from(filter.len()).map_err(|_| "filter too long".to_string())?,
            filter: filter.as_ptr(),
        };
        // SAFETY: a valid program that outlives the call; no_new_privs is set by the caller.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const Program,
                0,
                0,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn jumps_stay_inside_the_program() {
            let p = super::program();
            for (i, ins) in p.iter().enumerate() {
                if ins.code & 0x07 == 0x05 {
                    assert!(
                        i + 1 + (ins.jt.max(ins.jf) as usize) < p.len(),
                        "jump at {i} leaves the program"
                    );
                }
            }
            assert!(p.len() < 4096);
        }
    }
}
