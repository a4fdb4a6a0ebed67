//! The no-egress check: which sockets a sovrag process holds, read from `/proc`, and whether
//! any of them could carry data off the machine. sovrag needs none: a server holds its
//! listeners and the connections made to them, a CLI run holds nothing (or a loopback
//! connection to the local server). An outbound TCP connection to another host, or any UDP
//! socket (a DNS lookup is one), is a violation.
//!
//! Linux only (it reads `/proc/PID/fd` and the process's own `/proc/PID/net` tables);
//! elsewhere the check reports itself unavailable rather than passing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// The sockets of one process, sorted by what they are.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Sockets {
    /// Addresses listened on.
    pub listening: Vec<String>,
    /// Connections accepted on a listener (clients of the API).
    pub accepted: usize,
    /// Connections this process opened to a loopback address (a CLI asking the local
    /// server): they do not leave the machine.
    pub loopback_clients: Vec<String>,
    /// Connections to another host, and UDP sockets: what must never be there.
    pub violations: Vec<String>,
}

impl Sockets {
    pub fn passes(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The sockets process `pid` holds (this process when `None`).
pub fn check(pid: Option<u32>) -> std::io::Result<Sockets> {
    if !cfg!(target_os = "linux") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the socket check reads /proc, which only Linux has",
        ));
    }
    let proc = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("{proc}/fd"))? {
        // A descriptor closed while the folder is read is simply gone.
        let Ok(target) = fd.and_then(|fd| std::fs::read_link(fd.path())) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for (table, v6, is_tcp) in [
        ("tcp", false, true),
        ("tcp6", true, true),
        ("udp", false, false),
        ("udp6", true, false),
    ] {
        // A kernel without IPv6 has no tcp6 table.
        let Ok(text) = std::fs::read_to_string(format!("{proc}/net/{table}")) else {
            continue;
        };
        let mine = parse_table(&text, v6)
            .into_iter()
            .filter(|e| inodes.contains(&e.inode));
        if is_tcp {
            tcp.extend(mine);
        } else {
            udp.extend(mine);
        }
    }
    Ok(classify(&tcp, &udp))
}

/// One row of `/proc/net/{tcp,udp}{,6}`.
#[derive(Debug, Clone)]
struct Entry {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

const TCP_LISTEN: u8 = 0x0A;

fn classify(tcp: &[Entry], udp: &[Entry]) -> Sockets {
    let mut s = Sockets::default();
    let ports: HashSet<u16> = tcp
        .iter()
        .filter(|e| e.state == TCP_LISTEN)
        .map(|e| e.local.port())
        .collect();
    for e in tcp {
        if e.state == TCP_LISTEN {
            s.listening.push(e.local.to_string());
        } else if ports.contains(&e.local.port()) {
            s.accepted += 1;
        } else if is_loopback(e.remote.ip()) {
            s.loopback_clients.push(e.remote.to_string());
        } else {
            s.violations
                .push(format!("tcp {} -> {}", e.local, e.remote));
        }
    }
    for e in udp {
        s.violations
            .push(format!("udp {} -> {}", e.local, e.remote));
    }
    s.listening.sort();
    s.listening.dedup();
    s
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn parse_table(text: &str, v6: bool) -> Vec<Entry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Entry {
                local: parse_addr(f.get(1)?, v6)?,
                remote: parse_addr(f.get(2)?, v6)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address is the kernel's
/// 32-bit words, each in host byte order (little-endian on every machine sovrag runs on).
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    let ip = if v6 {
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1EC6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1EC6 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 112 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:D2A6 0100007F:1EC6 01 00000000:00000000 00:00000000 00000000     0        0 113 1 0000000000000000 20 4 30 10 -1
   3: 0A00000A:C350 08080808:01BB 01 00000000:00000000 00:00000000 00000000     0        0 114 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn sorts_listeners_accepted_loopback_and_outbound() {
        let tcp = parse_table(TCP, false);
        assert_eq!(tcp.len(), 4);
        assert_eq!(tcp[0].local.to_string(), "127.0.0.1:7878");
        let s = classify(&tcp, &[]);
        assert_eq!(s.listening, vec!["127.0.0.1:7878"]);
        assert_eq!(s.accepted, 1);
        assert_eq!(s.loopback_clients, vec!["127.0.0.1:7878"]);
        assert_eq!(s.violations, vec!["tcp 10.0.0.10:50000 -> 8.8.8.8:443"]);
        assert!(!s.passes());
    }

    #[test]
    fn any_udp_socket_is_a_violation_and_v6_parses() {
        let udp = parse_table(
            "hdr\n 0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 0 0 0 0 0 0 0 0 200 0\n",
            true,
        );
        assert_eq!(udp[0].local.to_string(), "[::1]:53");
        let s = classify(&[], &udp);
        assert_eq!(s.violations.len(), 1);
    }

    #[test]
    fn this_test_process_holds_no_outbound_socket() {
        if cfg!(target_os = "linux") {
            let s = check(None).unwrap();
            assert!(s.passes(), "{s:?}");
        }
    }
}
