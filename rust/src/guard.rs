//! The connection guard: a thread that closes the client connections the HTTP
//! server cannot time out itself, by looking at this process's own sockets.
//!
//! granian (hyper) starts its header timeout only once a request's first byte
//! arrived, and holds one permit of its connection limit per connection: a client
//! that connects and sends nothing is never closed, and enough of them stop the
//! server from accepting anyone. The guard reads TCP_INFO of every socket on the
//! listening port (once a second; four times a second while busy) and shuts down (``shutdown(2)``, the server still owns and closes
//! the fd) those that received no byte for ``header_timeout``, and, when more than
//! ``high_water`` connections are open, the newest ones that received nothing for
//! ``grace`` (a client that means to talk sends its request within a round trip)
//! until ``low_water`` are left. It also sets TCP_USER_TIMEOUT on the listener
//! (inherited by every accepted socket): a client that stops reading (zero window)
//! or vanishes is then dropped by the kernel, so a response the server cannot
//! finish writing does not hold its connection forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
// Offsets in the kernel's struct tcp_info (include/uapi/linux/tcp.h), stable ABI.
const OFF_LAST_DATA_SENT: usize = 44;
const OFF_LAST_DATA_RECV: usize = 52;
const OFF_BYTES_RECEIVED: usize = 128;

struct Info {
    state: u8,
    /// ms since the last data was sent.
    last_data_sent_ms: u32,
    /// ms since the last data was received (since the connection was set up when none was).
    last_data_recv_ms: u32,
    bytes_received: u64,
}

fn local_port(fd: i32) -> Option<u16> {
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe { libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 {
        return None;
    }
    match addr.ss_family as i32 {
        libc::AF_INET => {
            let a = unsafe { &*(&addr as *const _ as *const libc::sockaddr_in) };
            Some(u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            let a = unsafe { &*(&addr as *const _ as *const libc::sockaddr_in6) };
            Some(u16::from_be(a.sin6_port))
        }
        _ => None,
    }
}

fn tcp_info(fd: i32) -> Option<Info> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 || (len as usize) < OFF_BYTES_RECEIVED + 8 {
        return None;
    }
    let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap());
    Some(Info {
        state: buf[0],
        last_data_sent_ms: u32_at(OFF_LAST_DATA_SENT),
        last_data_recv_ms: u32_at(OFF_LAST_DATA_RECV),
        bytes_received: u64_at(OFF_BYTES_RECEIVED),
    })
}

/// `/proc/self/fd`, opened once and re-read with `rewinddir`: at the fd limit (where
/// a flood of connections puts a server that does not stop accepting before it, as
/// actix does) opening it again fails with EMFILE, and a guard that needs a new fd
/// for each pass would stop shedding exactly when it is needed.
struct FdDir(*mut libc::DIR);

// Only the guard thread uses it after it was opened.
unsafe impl Send for FdDir {}

impl FdDir {
    fn open() -> std::io::Result<Self> {
        let dir = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
        if dir.is_null() {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(FdDir(dir))
        }
    }

    /// The process's open fds now.
    fn fds(&mut self) -> Vec<i32> {
        let mut fds = Vec::new();
        unsafe {
            libc::rewinddir(self.0);
            loop {
                let entry = libc::readdir(self.0);
                if entry.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*entry).d_name.as_ptr());
                if let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok()) {
                    fds.push(fd);
                }
            }
        }
        fds
    }
}

/// The sockets among `fds` bound to `port`: (fd, info).
fn sockets_on(fds: impl IntoIterator<Item = i32>, port: u16) -> Vec<(i32, Info)> {
    let mut found = Vec::new();
    for fd in fds {
        // getsockname fails (ENOTSOCK, EBADF) on anything but an open socket: one syscall per fd.
        if local_port(fd) != Some(port) {
            continue;
        }
        if let Some(info) = tcp_info(fd) {
            found.push((fd, info));
        }
    }
    found
}

#[derive(Clone, Copy)]
struct Limits {
    port: u16,
    header_timeout_ms: u32,
    grace_ms: u32,
    high_water: usize,
    low_water: usize,
    user_timeout_ms: u32,
}

/// Shut `fd` down if it still is a silent connection at least `min_age_ms` old
/// (re-read right before: the fd may have been closed and reused since the scan).
fn shed(fd: i32, port: u16, min_age_ms: u32) -> bool {
    if local_port(fd) != Some(port) {
        return false;
    }
    match tcp_info(fd) {
        // Only established ones: a socket already shut down waits for the server to close it.
        Some(i) if i.state == TCP_ESTABLISHED && i.bytes_received == 0 && i.last_data_recv_ms >= min_age_ms => {
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) == 0 }
        }
        _ => false,
    }
}

fn set_user_timeout(fd: i32, ms: u32) {
    let v = ms as libc::c_int;
    unsafe {
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
    }
}

/// One pass: (connections open, connections shed).
fn sweep(l: &Limits, dir: &mut FdDir) -> (usize, usize) {
    let socks = sockets_on(dir.fds(), l.port);
    let mut open = 0;
    let mut silent = Vec::new();
    let mut shed_count = 0;
    for (fd, info) in socks {
        if info.state == TCP_LISTEN {
            if l.user_timeout_ms > 0 {
                set_user_timeout(fd, l.user_timeout_ms);
            }
            continue;
        }
        let quiet = info.state == TCP_ESTABLISHED && info.bytes_received == 0;
        if quiet && info.last_data_recv_ms >= l.header_timeout_ms {
            if shed(fd, l.port, l.header_timeout_ms) {
                shed_count += 1;
            }
            continue;
        }
        open += 1; // every fd counts towards the limit, also one shut down but not yet closed
        if quiet && info.last_data_recv_ms >= l.grace_ms {
            silent.push((info.last_data_recv_ms, fd));
        }
    }
    if open > l.high_water {
        silent.sort_unstable(); // youngest first
        for (_, fd) in silent {
            if open <= l.low_water {
                break;
            }
            if shed(fd, l.port, l.grace_ms) {
                open -= 1;
                shed_count += 1;
            }
        }
    }
    (open, shed_count)
}

/// Bytes in a socket's send queue the client has not acknowledged yet (TIOCOUTQ).
fn unacked_bytes(fd: i32) -> Option<libc::c_int> {
    let mut n: libc::c_int = 0;
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (rc == 0).then_some(n)
}

/// Client connections to `port` of this process still taking a response: established,
/// and with bytes the client has not acknowledged or data sent less than `quiet_ms`
/// ago. What a draining server waits for before it exits; an idle keep-alive
/// connection (everything acknowledged, nothing sent for a while) does not count.
#[pyfunction]
pub fn unsettled_connections(port: u16, quiet_ms: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let fds = dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()));
    sockets_on(fds, port)
        .iter()
        .filter(|(fd, info)| {
            info.state == TCP_ESTABLISHED
                && (info.last_data_sent_ms < quiet_ms || unacked_bytes(*fd).is_none_or(|n| n > 0))
        })
        .count()
}

/// Counters of a running guard (for tests and logs).
#[pyclass(module = "tollway._core", frozen)]
pub struct ConnectionGuard {
    open: Arc<AtomicU64>,
    shed: Arc<AtomicU64>,
}

#[pymethods]
impl ConnectionGuard {
    /// Start the guard thread for connections to `port` (it runs as long as the process).
    ///
    /// ``header_timeout``: seconds a connection may stay without sending a byte.
    /// ``max_connections``: above 7/8 of it, silent connections older than ``grace``
    /// seconds are shed, youngest first, down to 3/4. ``user_timeout``: TCP_USER_TIMEOUT
    /// in seconds set on the listener (0: leave it). ``interval``: seconds between passes,
    /// a quarter of it while more than 3/8 of ``max_connections`` are open (a pass costs
    /// two syscalls per client connection).
    #[new]
    #[pyo3(signature = (port, *, header_timeout, max_connections, grace=0.5, user_timeout=0.0, interval=1.0))]
    fn py_new(port: u16, header_timeout: f64, max_connections: usize, grace: f64, user_timeout: f64, interval: f64) -> PyResult<Self> {
        let ms = |s: f64, what: &str| -> PyResult<u32> {
            if s.is_finite() && (0.0..=86_400.0).contains(&s) {
                Ok((s * 1000.0) as u32)
            } else {
                Err(PyValueError::new_err(format!("{what} must be from 0 to 86400 seconds, got {s}")))
            }
        };
        if max_connections < 8 {
            return Err(PyValueError::new_err("max_connections must be at least 8"));
        }
        let limits = Limits {
            port,
            header_timeout_ms: ms(header_timeout, "header_timeout")?.max(1),
            grace_ms: ms(grace, "grace")?,
            high_water: max_connections - max_connections / 8,
            low_water: max_connections - max_connections / 4,
            user_timeout_ms: ms(user_timeout, "user_timeout")?,
        };
        let pause = Duration::from_secs_f64(ms(interval, "interval")?.max(10) as f64 / 1000.0);
        let (open, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (o, s) = (open.clone(), shed.clone());
        let mut dir = FdDir::open().map_err(|e| PyValueError::new_err(format!("cannot read /proc/self/fd: {e}")))?;
        std::thread::Builder::new()
            .name("tollway-guard".into())
            .spawn(move || loop {
                let (n, k) = sweep(&limits, &mut dir);
                if k > 0 && std::env::var_os("TOLLWAY_GUARD_DEBUG").is_some() {
                    eprintln!("tollway-guard: shed {k}, {n} open");
                }
                o.store(n as u64, Ordering::Relaxed);
                s.fetch_add(k as u64, Ordering::Relaxed);
                std::thread::sleep(if n > limits.low_water / 2 { pause / 4 } else { pause });
            })
            .map_err(|e| PyValueError::new_err(format!("cannot start the connection guard: {e}")))?;
        Ok(ConnectionGuard { open, shed })
    }

    /// Client connections open at the last pass.
    #[getter]
    fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections shed so far.
    #[getter]
    fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}
