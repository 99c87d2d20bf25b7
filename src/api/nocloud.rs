//! A server's metadata as a cloud-init NoCloud datasource, for stock cloud images.
//!
//! QEMU tells the guest where the datasource is through its SMBIOS serial number
//! (`ds=nocloud-net;s=http://<metadata address>/metadata/v1/nocloud/`, see
//! `crate::hypervisor::qemu`); cloud-init then reads `meta-data`, `user-data`, `vendor-data`
//! and `network-config` from there, through the same door as the Extility document (the
//! metadata forward of a confined network, or 169.254.169.254 on a tenant network).
//!
//! The documents are JSON, which is YAML: every string is quoted and escaped by serde, so no
//! server name, user name or key comment can change the documents' structure.
//!
//! - `meta-data`: `instance-id` (the server's uuid: cloud-init's once-per-instance modules
//!   run on its first boot only) and `local-hostname`.
//! - `user-data`: `#cloud-config` with the host name, the platform's first-boot password for
//!   the first-boot user (as a SHA-512 crypt hash, never the password itself), or for the
//!   image's default user when the image names none, password SSH logins when there is a
//!   password, and the server's SSH keys for the image's default user
//!   (and for the first-boot user when it is another one). A first-boot user other than
//!   `root` or the image's default is made, with sudo, as the Extility document promises.
//! - `network-config` (version 2): the NIC, `eth0`, by its MAC address; on a tenant network its static
//!   address, default route and DNS server (its VLAN's gateway), with DHCP off; on QEMU's
//!   user-mode network, DHCP.
//! - `vendor-data`: empty (cloud-init asks for it).

use serde_json::{Value, json};
use sha_crypt::{PasswordHasher, ShaCrypt};

use crate::ops::server::metadata::ServerMetadata;

/// The files of the datasource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCloudFile {
    MetaData,
    UserData,
    VendorData,
    NetworkConfig,
}

impl NoCloudFile {
    pub const ALL: [NoCloudFile; 4] = [
        NoCloudFile::MetaData,
        NoCloudFile::UserData,
        NoCloudFile::VendorData,
        NoCloudFile::NetworkConfig,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NoCloudFile::MetaData => "meta-data",
            NoCloudFile::UserData => "user-data",
            NoCloudFile::VendorData => "vendor-data",
            NoCloudFile::NetworkConfig => "network-config",
        }
    }

    pub fn from_name(name: &str) -> Option<NoCloudFile> {
        NoCloudFile::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The text of one file of the datasource.
pub fn render(file: NoCloudFile, server: &ServerMetadata) -> String {
    match file {
        NoCloudFile::MetaData => document(&meta_data(server)),
        NoCloudFile::UserData => format!("#cloud-config\n{}", document(&user_data(server))),
        NoCloudFile::VendorData => String::new(),
        NoCloudFile::NetworkConfig => document(&network_config(server)),
    }
}

fn document(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

fn meta_data(server: &ServerMetadata) -> Value {
    json!({
        "instance-id": server.uuid,
        "local-hostname": server.hostname,
    })
}

fn user_data(server: &ServerMetadata) -> Value {
    let mut config = serde_json::Map::new();
    config.insert("hostname".into(), json!(server.hostname));
    config.insert("manage_etc_hosts".into(), json!(true));
    let user = server
        .initial_user
        .as_deref()
        .map(str::trim)
        .filter(|u| is_user_name(u));
    let password = server.initial_password.as_deref().filter(|p| !p.is_empty());
    let keys = &server.ssh_keys;
    let mut users = vec![json!("default")];
    if let Some(user) = user
        && user != "root"
    {
        let mut entry = json!({
            "name": user,
            "lock_passwd": false,
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
        });
        if !keys.is_empty() {
            entry["ssh_authorized_keys"] = json!(keys);
        }
        users.push(entry);
    }
    config.insert("users".into(), Value::Array(users));
    if user == Some("root") {
        // Root gets the keys too, and may log in (cloud-init's default refuses root logins).
        config.insert("disable_root".into(), json!(false));
    }
    match (user, password) {
        (Some(user), Some(password)) => {
            config.insert(
                "chpasswd".into(),
                json!({
                    "expire": false,
                    "users": [{"name": user, "password": hash_sha512(password), "type": "hash"}],
                }),
            );
            config.insert("ssh_pwauth".into(), json!(true));
        }
        // No first-boot user: the password is the image's default user's (cloud-init's
        // `password` takes no hash; the Extility document gives the same guest the same
        // password in the clear anyway).
        (None, Some(password)) => {
            config.insert("password".into(), json!(password));
            config.insert("chpasswd".into(), json!({"expire": false}));
            config.insert("ssh_pwauth".into(), json!(true));
        }
        (_, None) => {}
    }
    if !keys.is_empty() {
        config.insert("ssh_authorized_keys".into(), json!(keys));
    }
    Value::Object(config)
}

fn network_config(server: &ServerMetadata) -> Value {
    let Some(nic) = &server.nic else {
        return json!({"version": 2, "ethernets": {}});
    };
    // Named eth0 by its MAC address, as on other clouds: scripts expect it, and the name does
    // not depend on the guest's kernel or udev.
    let mut ethernet = json!({"match": {"macaddress": nic.mac}, "set-name": "eth0"});
    match nic.ipv4 {
        Some(ip) => {
            ethernet["dhcp4"] = json!(false);
            ethernet["addresses"] = json!([format!("{}/{}", ip.address, ip.prefix)]);
            ethernet["routes"] = json!([{"to": "0.0.0.0/0", "via": ip.gateway.to_string()}]);
            ethernet["nameservers"] = json!({
                "addresses": [ip.gateway.to_string()],
                "search": ["internal"],
            });
        }
        None => ethernet["dhcp4"] = json!(true),
    }
    json!({"version": 2, "ethernets": {"eth0": ethernet}})
}

/// A user name cloud-init and `useradd` take: `[a-z_][a-z0-9_-]*`, at most 32 characters.
fn is_user_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// A SHA-512 crypt hash (`$6$rounds=5000$salt$...`) of `password` with a random salt, as
/// /etc/shadow holds it.
fn hash_sha512(password: &str) -> String {
    let salt: [u8; 12] = rand::random();
    match ShaCrypt::SHA512.hash_password_with_salt(password.as_bytes(), &salt) {
        Ok(hash) => hash.to_string(),
        // Not reachable with a 12-byte salt; an unusable hash locks the password rather than
        // leaking it.
        Err(_) => "!".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::server::metadata::{NicMetadata, StaticIpv4};
    use sha_crypt::{PasswordHashRef, PasswordVerifier};

    fn server(user: Option<&str>) -> ServerMetadata {
        ServerMetadata {
            uuid: "6f1c1a0e-5d1b-4a8e-9d55-0c2f4d1f3b2a".into(),
            name: "Web \"1\"\n#evil: true".into(),
            hostname: "web-1-evil-true".into(),
            initial_user: user.map(String::from),
            initial_password: Some("s3cret pass".into()),
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEjwn8tN alice".into()],
            nic: Some(NicMetadata {
                mac: "52:54:00:aa:bb:cc".into(),
                ipv4: Some(StaticIpv4 {
                    address: "10.64.0.10".parse().unwrap(),
                    prefix: 24,
                    gateway: "10.64.0.1".parse().unwrap(),
                }),
            }),
        }
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text.trim_start_matches("#cloud-config\n")).unwrap()
    }

    #[test]
    fn the_password_is_given_as_a_hash_that_verifies() {
        let text = render(NoCloudFile::UserData, &server(Some("debian")));
        assert!(text.starts_with("#cloud-config\n"));
        assert!(!text.contains("s3cret"), "{text}");
        let doc = parsed(&text);
        let entry = &doc["chpasswd"]["users"][0];
        assert_eq!(entry["name"], "debian");
        assert_eq!(entry["type"], "hash");
        let hash = entry["password"].as_str().unwrap();
        assert!(hash.starts_with("$6$"), "{hash}");
        let hash = PasswordHashRef::new(hash).unwrap();
        assert!(
            ShaCrypt::default()
                .verify_password(b"s3cret pass", hash)
                .is_ok()
        );
        assert!(ShaCrypt::default().verify_password(b"wrong", hash).is_err());
        assert_eq!(doc["users"][1]["name"], "debian");
        assert_eq!(doc["ssh_pwauth"], true);
    }

    #[test]
    fn root_may_log_in_and_gets_no_extra_user() {
        let doc = parsed(&render(NoCloudFile::UserData, &server(Some("root"))));
        assert_eq!(doc["disable_root"], false);
        assert_eq!(doc["users"], json!(["default"]));
        assert_eq!(doc["chpasswd"]["users"][0]["name"], "root");
    }

    #[test]
    fn without_a_first_boot_user_the_password_is_the_default_users() {
        for user in [None, Some(""), Some("x; rm -rf /")] {
            let doc = parsed(&render(NoCloudFile::UserData, &server(user)));
            assert_eq!(doc["password"], "s3cret pass", "{user:?}");
            assert_eq!(doc["chpasswd"], json!({"expire": false}));
            assert_eq!(doc["users"], json!(["default"]));
            assert_eq!(doc["ssh_authorized_keys"][0], server(None).ssh_keys[0]);
        }
        let mut no_password = server(None);
        no_password.initial_password = None;
        let doc = parsed(&render(NoCloudFile::UserData, &no_password));
        assert!(doc.get("password").is_none() && doc.get("chpasswd").is_none());
        assert!(doc.get("ssh_pwauth").is_none());
    }

    #[test]
    fn names_cannot_change_the_documents_structure() {
        let doc = parsed(&render(NoCloudFile::MetaData, &server(None)));
        assert_eq!(doc.as_object().unwrap().len(), 2);
        assert_eq!(doc["local-hostname"], "web-1-evil-true");
    }

    #[test]
    fn a_tenant_nic_is_static_and_a_user_mode_one_dhcp() {
        let doc = parsed(&render(NoCloudFile::NetworkConfig, &server(None)));
        let nic = &doc["ethernets"]["eth0"];
        assert_eq!(nic["match"]["macaddress"], "52:54:00:aa:bb:cc");
        assert_eq!(nic["addresses"][0], "10.64.0.10/24");
        assert_eq!(nic["routes"][0]["via"], "10.64.0.1");
        assert_eq!(nic["dhcp4"], false);
        let mut user_mode = server(None);
        user_mode.nic.as_mut().unwrap().ipv4 = None;
        let doc = parsed(&render(NoCloudFile::NetworkConfig, &user_mode));
        assert_eq!(doc["ethernets"]["eth0"]["dhcp4"], true);
    }
}
