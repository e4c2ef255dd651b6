//! A replica set of real nodes on loopback: members, their secret and replication config.

use std::net::SocketAddr;

use super::{free_addr, Node};

pub struct Member {
    pub name: String,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub repl: SocketAddr,
}

pub fn secret_file(dir_name: &str, secret: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = std::env::temp_dir().join(format!("podstore-secret-{dir_name}-{}", std::process::id()));
    std::fs::write(&p, secret).expect("secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

pub fn repl_config(me: &Member, peers: &[&Member], secret: &std::path::Path) -> String {
    let mut t = format!(
        "[limits]\ncopy_timeout_ms = 2000\n\n[replication]\nlisten = \"{}\"\ndatacenter = \"dc-{}\"\nsecret_file = \"{}\"\nconnect_timeout_ms = 500\npeer_idle_ms = 1500\n\n",
        me.repl,
        me.name,
        secret.display()
    );
    for p in peers {
        t.push_str(&format!(
            "[[replication.peers]]\nname = \"{}\"\ndatacenter = \"dc-{}\"\naddress = \"{}\"\n\n",
            p.name, p.name, p.repl
        ));
    }
    t
}

pub fn members(n: usize) -> Vec<Member> {
    ["pod-a", "pod-b", "pod-c", "pod-d"][..n]
        .iter()
        .map(|name| Member {
            name: name.to_string(),
            data: free_addr(),
            admin: free_addr(),
            repl: free_addr(),
        })
        .collect()
}

pub fn start(tag: &str, m: &[Member], secret: &std::path::Path) -> Vec<Node> {
    start_with(tag, m, secret, "")
}

/// [`start`] with extra configuration text for every member.
pub fn start_with(tag: &str, m: &[Member], secret: &std::path::Path, extra: &str) -> Vec<Node> {
    m.iter()
        .map(|me| {
            let peers: Vec<&Member> = m.iter().filter(|p| p.name != me.name).collect();
            Node::start_on(
                &format!("{tag}-{}", me.name),
                &me.name,
                me.data,
                me.admin,
                &format!("{extra}\n{}", repl_config(me, &peers, secret)),
            )
        })
        .collect()
}
