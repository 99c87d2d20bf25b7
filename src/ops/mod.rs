//! The operation layer: one function per API call, and the kinds of job those calls queue.
//!
//! The SOAP and JSON adapters (in `crate::api`) only decode arguments into the JSON-shaped
//! map [`registry::Operation::call`] takes and encode what it returns; everything an API call
//! does happens in the functions listed in [`operations!`] below. Long work runs as jobs of
//! the kinds listed in [`JOB_KINDS`] at the end of this file.
//!
//! An `Option` argument may be omitted or sent as nil / null; an optional number also takes -1
//! as "not given" ([`wire::FromArg::means_not_given`]), for clients such as Axis whose stubs
//! map `xsd:long` to a primitive that cannot be nil.
//!
//! Each row of the table says whether the operation only reads (`read`) or changes something
//! (`write`); every call of a `write` operation leaves one row in the audit trail
//! ([`audit`]), whatever its outcome.

pub mod registry;
pub mod wire;

pub mod audit;
pub mod enqueue;
pub mod inflight;
pub mod page;
pub mod server_status;
pub mod state;
pub mod suggest;
pub mod validate;

pub mod accounts;
pub mod jobs;
pub mod network;
pub mod platform;
pub mod server;
pub mod storage;

// The table below names each operation's function by its module.
use accounts::{customer, quota, ssh_key, token, vdc};
use jobs::{fetch, job};
use network::{firewall, vlan};
use server::{console, port_forward};
use storage::hygiene_report;
use storage::{create_image, disk, hygiene, image, product_offer, publish, snapshot, usage};

use crate::job_kinds;
use registry::operations;
use state::AppState;
use wire::Timestamp;

pub use audit::{AuditEvent, Origin, Via};
pub use console::ConsoleAccess;
pub use customer::Customer;
pub use disk::Disk;
pub use firewall::{FirewallRule, FirewallTemplate};
pub use hygiene_report::{HygieneFinding, HygieneReport};
pub use image::Image;
pub use job::Job;
pub use port_forward::PortForward;
pub use product_offer::ProductOffer;
pub use publish::ImageShare;
pub use quota::Quota;
pub use server::Server;
pub use snapshot::Snapshot;
pub use ssh_key::SshKey;
pub use token::{AuthenticationToken, AuthenticationTokenInfo};
pub use usage::UsageRecord;
pub use vdc::Vdc;
pub use vlan::Vlan;

/// The authenticated customer making a call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub customer_id: i64,
    pub customer_uuid: String,
    pub billing_entity_id: i64,
    pub is_admin: bool,
    /// The authentication token the call was made with (`token`); `None` for a password.
    pub token_id: Option<i64>,
}

/// Everything an operation needs: the application, who is calling, and from where.
pub struct Ctx {
    pub state: AppState,
    pub caller: Caller,
    /// The adapter and the client's address, which the audit trail records.
    pub origin: Origin,
}

impl Ctx {
    pub fn customer_id(&self) -> i64 {
        self.caller.customer_id
    }

    /// Begins a write transaction of this call: the only way an operation begins one
    /// (`tests/it/audit.rs` checks). In a `write` call, the first such transaction to commit
    /// writes the call's audit row as its last statement, so the change and its row commit
    /// together or not at all ([`audit::CallRecord`]).
    pub async fn begin_write(&self) -> Result<crate::db::Tx, sqlx::Error> {
        let mut tx = self.state.db.begin_write().await?;
        audit::attach(&mut tx);
        Ok(tx)
    }
}

operations! {
    /// Lists the caller's virtual data centres, by id: at most `page_size` (1 to 1000; omitted:
    /// 1000) with an id above `after_id` (omitted: from the first); pass the last `vdc_id` of a
    /// page as `after_id` to get the next.
    read ListVDCs(
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
    ) -> vdcs: Vec<Vdc> = vdc::list_vdcs;
    /// Creates a virtual data centre.
    write CreateVDC(vdc_name: String) -> vdc: Vdc = vdc::create_vdc;
    /// Deletes a VDC that holds no server, disk, VLAN or firewall template (CONFLICT naming
    /// what is left; a FetchDisk still to make a disk in it counts). Returns 1.
    #[since(2)]
    write DeleteVDC(vdc_id: i64) -> result: i64 = vdc::delete_vdc;
    /// Lists the VLANs of a VDC, by id: at most `page_size` (1 to 1000; omitted: 1000) with an
    /// id above `after_id` (omitted: from the first); pass the last `vlan_id` of a page as
    /// `after_id` to get the next.
    read ListVLANs(
        vdc_id: i64,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
    ) -> vlans: Vec<Vlan> = vlan::list_vlans;
    /// Creates a VLAN in a VDC: an isolated network with a subnet of its own (shown in
    /// `subnet` and `gateway`), whose servers reach each other and nothing of other VLANs.
    /// Counts against the `vlans` quota.
    write CreateVLAN(vdc_id: i64, vlan_name: String) -> vlan: Vlan = vlan::create_vlan;
    /// Deletes a VLAN no server is on (CONFLICT otherwise). Returns 1.
    #[since(2)]
    write DeleteVLAN(vlan_id: i64) -> result: i64 = vlan::delete_vlan;
    /// Lists product offers of a type (`server`, `disk`, `image`), or the server and disk offers
    /// when the type is empty, by id: at most `page_size` (1 to 1000; omitted: 1000) with an id
    /// above `after_id` (omitted: from the first); pass the last `product_offer_id` of a page
    /// as `after_id` to get the next.
    read ListProductOffers(
        r#type: Option<String>,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
    ) -> product_offers: Vec<ProductOffer> = product_offer::list_product_offers;
    /// Lists the images the caller may use: its own, those published to it (`owner` says by
    /// whom), and platform images, by id: at most `page_size` (1 to 1000; omitted: 1000) with
    /// an id above `after_id` (omitted: from the first); pass the last `image_id` of a page as
    /// `after_id` to get the next. `name` (optional) keeps the images whose name contains it,
    /// ignoring case (`%` and `_` are plain characters).
    read ListImages(
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
        #[since(2)] name: Option<String>,
    ) -> images: Vec<Image> = image::list_images;
    /// Makes a private image of a disk whose server is stopped: a byte-for-byte copy that keeps
    /// no reference to the disk and takes space in proportion to the data. Until the job ends
    /// the disk's server cannot start and the disk cannot be deleted or reverted. Returns a job
    /// id; the job's item is the new image once it has succeeded.
    write CreateImage(
        disk_id: i64,
        name: String,
        default_username: Option<String>,
        generate_password: bool,
    ) -> job_id: i64 = create_image::create_image;
    /// Renames one of the caller's images.
    write RenameImage(image_id: i64, name: String) -> image: Image = image::rename_image;
    /// Deletes one of the caller's images. Disks and servers made from it are not affected.
    /// Returns 1.
    write DeleteImage(image_id: i64) -> result: i64 = image::delete_image;
    /// Publishes one of the caller's images to a customer (its uuid), a billing entity (its
    /// uuid: every customer of it) or `platform` (every customer; administrators only unless
    /// the operator allows customers). Recipients can make servers and disks from it but not
    /// change, delete or publish it. `allow_republish` (optional, false for a new
    /// publication; given again, it replaces the publication's) lets them publish the images
    /// they make of disks made from it; without it, publishing such an image is
    /// PERMISSION_DENIED. An image derived from one published to the caller is published only
    /// if that image's owner allowed it. Returns 1 and, since version 2, `hygiene`: the
    /// image's last hygiene report (as GetImageReport gives it), so that its owner knows what
    /// the recipients receive: `clean`, `findings` (each with its code, severity and paths),
    /// `unreadable`, or `not_checked` (publishing runs no check: CheckImage does). Under the
    /// operator's `--publish-requires-clean`, an image never checked, unreadable or with a
    /// high-severity finding is refused with IMAGE_NOT_CLEAN and the list.
    write PublishImage(
        image_id: i64,
        publish_to: String,
        #[since(2)] allow_republish: Option<bool>,
    ) -> result: i64, #[since(2)] hygiene: HygieneReport = publish::publish_image;
    /// Undoes a PublishImage: the recipients can no longer make servers or disks from the
    /// image, nor anyone from the images they derived from it; what was made already is
    /// untouched. Returns 1.
    write RevokeImage(image_id: i64, publish_to: String) -> result: i64 = publish::revoke_image;
    /// Lists whom one of the caller's images is published to (uuids and names, never e-mail
    /// addresses), and whether each publication allows re-publication, oldest first: at most
    /// `page_size` (1 to 1000; omitted: 1000) with a `share_id` above `after_id` (omitted: from
    /// the first); pass the last `share_id` of a page as `after_id` to get the next.
    read ListImageShares(
        image_id: i64,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
    ) -> shares: Vec<ImageShare> = publish::list_image_shares;
    /// Administrators: bills servers made from an image under an `image` product offer (0
    /// removes it). Each such server then records a usage line, and so does each server made
    /// from an image derived from it that has no offer of its own.
    write SetImageProductOffer(image_id: i64, product_offer_id: i64) -> image: Image =
        image::set_image_product_offer;
    /// Checks one of the caller's disk images without booting it: a job reads its file systems
    /// (MBR or GPT partitions, ext2/3/4, XFS, LVM) in an appliance VM of its own and stores
    /// what they would give away if the image were shared (GetImageReport, and ListImages'
    /// `hygiene_status`): password hashes, authorized keys, SSH host keys, logs, shell
    /// histories, a machine-id, cloud-init state, DHCP leases, persistent net rules, files in
    /// /tmp, no first-boot agent. An image that cannot be read fails the job with
    /// IMAGE_UNREADABLE. Returns a job id; the job's item is the image.
    #[since(2)]
    write CheckImage(image_id: i64) -> job_id: i64 = hygiene::check_image;
    /// CheckImage's check of one of the caller's disks as it is now (GetDiskReport). Returns a
    /// job id; the job's item is the disk.
    #[since(2)]
    write CheckDisk(disk_id: i64) -> job_id: i64 = hygiene::check_disk;
    /// Makes a cleaned copy of one of the caller's disk images as a new private image named
    /// `name` (omitted: the image's name and " (cleaned)"); the image itself is not changed.
    /// `operations` (omitted or empty: all but `remove_authorized_keys`) are the cleaning
    /// steps: `remove_ssh_host_keys`, `lock_passwords`, `remove_authorized_keys`,
    /// `truncate_logs`, `remove_shell_histories`, `empty_machine_id`,
    /// `remove_cloud_init_state`, `remove_dhcp_leases`, `remove_persistent_net_rules`,
    /// `empty_tmp`; `remove_paths` (at most 64 absolute paths) are removed too (test
    /// scripts). The new image is checked again, its report stored. Counts its size against
    /// the `storage_bytes` quota. Returns a job id; the job's item is the new image.
    #[since(2)]
    write CleanImage(
        image_id: i64,
        operations: Option<Vec<String>>,
        remove_paths: Option<Vec<String>>,
        name: Option<String>,
    ) -> job_id: i64 = hygiene::clean_image;
    /// Returns the last check of an image the caller may use (its own, published to it, or a
    /// platform image): `status` `not_checked`, `clean`, `findings` or `unreadable`, and the
    /// findings, highest severity first.
    #[since(2)]
    read GetImageReport(image_id: i64) -> report: HygieneReport = hygiene::get_image_report;
    /// Returns the last check (CheckDisk) of one of the caller's disks.
    #[since(2)]
    read GetDiskReport(disk_id: i64) -> report: HygieneReport = hygiene::get_disk_report;
    /// Lists the disks of a VDC, by id: at most `page_size` (1 to 1000; omitted: 1000) with an
    /// id above `after_id` (omitted: from the first); pass the last `disk_id` of a page as
    /// `after_id` to get the next. `name` (optional) keeps the disks whose name contains it,
    /// ignoring case (`%` and `_` are plain characters).
    read ListDisks(
        vdc_id: i64,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
        #[since(2)] name: Option<String>,
    ) -> disks: Vec<Disk> = disk::list_disks;
    /// Lists the disks of every VDC of the caller, by id, as ListDisks does for one: at most
    /// `page_size` (1 to 1000; omitted: 1000) with an id above `after_id` (omitted: from the
    /// first); `name` (optional) keeps the disks whose name contains it, ignoring case.
    #[since(2)]
    read ListAllDisks(
        page_size: Option<i64>,
        after_id: Option<i64>,
        name: Option<String>,
    ) -> disks: Vec<Disk> = disk::list_all_disks;
    /// Returns one disk.
    read GetDisk(disk_id: i64) -> disk: Disk = disk::get_disk;
    /// Creates a disk sized by a disk product offer: blank when `image_id` is 0, otherwise a
    /// thin copy of the image.
    write CreateDisk(
        vdc_id: i64,
        name: String,
        disk_productoffer_id: i64,
        image_id: i64,
    ) -> disk: Disk = disk::create_disk;
    /// Deletes a disk that is not attached to a server, and its snapshots. Returns 1.
    write DeleteDisk(disk_id: i64) -> result: i64 = disk::delete_disk;
    /// Renames one of the caller's disks.
    #[since(2)]
    write RenameDisk(disk_id: i64, name: String) -> disk: Disk = disk::rename_disk;
    /// Grows a disk to the size of a disk product offer, which becomes its offer; never shrinks
    /// it (an offer smaller than the disk is INVALID_ARGUMENT). The disk's server, if any, must
    /// be stopped, and no image be being made of the disk (CONFLICT otherwise); the growth
    /// counts against the `storage_bytes` quota.
    /// The data stays; the guest sees the new size at its next boot (its partitions and file
    /// systems are its own to grow).
    #[since(2)]
    write ResizeDisk(disk_id: i64, disk_productoffer_id: i64) -> disk: Disk = disk::resize_disk;
    /// Takes a snapshot of a disk (whose server, if any, is stopped): instant and thin. It
    /// counts the disk's capacity against the `storage_bytes` quota (what it may come to keep
    /// as the disk is rewritten); a disk has at most `--max-snapshots-per-disk` (16 by default;
    /// LIMIT_EXCEEDED beyond).
    write CreateDiskSnapshot(disk_id: i64, name: String) -> snapshot: Snapshot =
        snapshot::create_disk_snapshot;
    /// Lists the snapshots of a disk, oldest first: at most `page_size` (1 to 1000; omitted:
    /// 1000) with an id above `after_id` (omitted: from the first); pass the last
    /// `snapshot_id` of a page as `after_id` to get the next.
    read ListSnapshots(
        disk_id: i64,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
    ) -> snapshots: Vec<Snapshot> = snapshot::list_snapshots;
    /// Deletes a snapshot. Disks cloned from it are not affected. Returns 1.
    write DeleteSnapshot(snapshot_id: i64) -> result: i64 = snapshot::delete_snapshot;
    /// Makes a new disk in a VDC with the contents of a snapshot (a thin clone).
    write CloneDisk(snapshot_id: i64, new_disk_name: String, vdc_id: i64) -> disk: Disk =
        snapshot::clone_disk;
    /// Puts the snapshot's contents back on its disk (whose server, if any, is stopped),
    /// discarding what was written since. The snapshot stays, and can be reverted to again.
    write RevertDisk(snapshot_id: i64) -> disk: Disk = snapshot::revert_disk;
    /// Lists the servers of a VDC, by id: at most `page_size` (1 to 1000; omitted: 1000) with an
    /// id above `after_id` (omitted: from the first); pass the last `server_id` of a page as
    /// `after_id` to get the next. `name` (optional) keeps the servers whose name contains it,
    /// ignoring case (`%` and `_` are plain characters).
    read ListServers(
        vdc_id: i64,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
        #[since(2)] name: Option<String>,
    ) -> servers: Vec<Server> = server::list_servers;
    /// Lists the servers of every VDC of the caller, by id, as ListServers does for one: at
    /// most `page_size` (1 to 1000; omitted: 1000) with an id above `after_id` (omitted: from
    /// the first); `name` (optional) keeps the servers whose name contains it, ignoring case.
    #[since(2)]
    read ListAllServers(
        page_size: Option<i64>,
        after_id: Option<i64>,
        name: Option<String>,
    ) -> servers: Vec<Server> = server::list_all_servers;
    /// Returns one server, with its disks and first-boot credentials.
    read GetServer(server_id: i64) -> server: Server = server::get_server;
    /// Creates a stopped server. `vlan_id` -1 means no VLAN. The boot disk is a thin copy of the
    /// image sized by the first disk offer; each further offer adds a blank disk.
    /// `ssh_key_ids` (optional, at most 32) are the caller's SSH keys (CreateSSHKey) its first
    /// boot installs: cloud-init reads them from the NoCloud `user-data`, `extility-firstboot`
    /// from the metadata document.
    write CreateServer(
        vdc_id: i64,
        vlan_id: i64,
        server_name: String,
        image_id: i64,
        server_productoffer_id: i64,
        disk_productoffer_ids: Vec<i64>,
        #[since(2)] ssh_key_ids: Option<Vec<i64>>,
    ) -> server: Server = server::create_server;
    /// Destroys a server (powering it off first) and the disks made with it; other disks
    /// attached to it are detached and kept. Returns a job id.
    write DestroyServer(server_id: i64) -> job_id: i64 = server::destroy_server;
    /// Renames one of the caller's servers (its host name on its VLAN follows within seconds;
    /// a guest already set up keeps the name its first boot gave it).
    #[since(2)]
    write RenameServer(server_id: i64, server_name: String) -> server: Server =
        server::rename_server;
    /// Gives a stopped server (CONFLICT otherwise) the processors and memory of another server
    /// product offer, from its next start. An offer with more processors or memory than the
    /// caller's whole `running_vcpus` or `running_memory_mb` quota is QUOTA_EXCEEDED (such a
    /// server could never start); StartServer checks the rest, as always.
    #[since(2)]
    write ChangeServerProductOffer(server_id: i64, server_productoffer_id: i64) -> server: Server =
        server::change_server_product_offer;
    /// Attaches a disk to a server, at `index` (0 is the boot disk) or, when `index` is nil or
    /// -1, after its other disks. Returns 1.
    write AttachDisk(server_id: i64, disk_id: i64, index: Option<i64>) -> result: i64 =
        server::attach_disk;
    /// Detaches a disk from a server. Returns 1.
    write DetachDisk(server_id: i64, disk_id: i64) -> result: i64 = server::detach_disk;
    /// Forwards a TCP port of a server on a VLAN: connections to the returned `host_port`, on
    /// the address of the node running the server, reach `guest_port` of its NIC. At most 16
    /// per server (LIMIT_EXCEEDED), and they count against the `port_forwards` quota; they go
    /// with the server.
    #[since(2)]
    write AddPortForward(server_id: i64, guest_port: i64) -> port_forward: PortForward =
        port_forward::add_port_forward;
    /// Removes a port forward. Returns 1.
    #[since(2)]
    write RemovePortForward(port_forward_id: i64) -> result: i64 =
        port_forward::remove_port_forward;
    /// Lists a server's port forwards, by guest port: at most `page_size` (1 to 1000; omitted:
    /// 1000) after the port forward `after_id` (omitted: from the first; one that is not among
    /// them is INVALID_ARGUMENT); pass the last `port_forward_id` of a page as `after_id` to
    /// get the next.
    #[since(2)]
    read ListPortForwards(
        server_id: i64,
        page_size: Option<i64>,
        after_id: Option<i64>,
    ) -> port_forwards: Vec<PortForward> = port_forward::list_port_forwards;
    /// Creates a firewall template in a VDC: no rules yet, and what happens to a new
    /// connection no rule matches, coming in (`default_inbound`) and going out
    /// (`default_outbound`): `ALLOW` or `DENY`. It changes nothing until applied to a server
    /// (ApplyFirewallTemplate). Counts against the `firewall_templates` quota.
    #[since(2)]
    write CreateFirewallTemplate(
        vdc_id: i64,
        name: String,
        default_inbound: String,
        default_outbound: String,
    ) -> firewall_template: FirewallTemplate = firewall::create_firewall_template;
    /// Adds a rule to a firewall template, at `position` (1 is first; omitted, nil or -1:
    /// last; beyond the last: last). The first rule that matches a new connection decides;
    /// replies to an allowed connection always pass. `direction`: `IN` (what reaches the
    /// server, from its VLAN and through its port forwards; `cidr` is the source) or `OUT`
    /// (what it sends, to its VLAN and to the world; `cidr` is the destination). `protocol`:
    /// `TCP`, `UDP`, `ICMP` or `ANY`; for TCP and UDP, destination ports `port_from` to
    /// `port_to` (`port_from` alone: one port; neither: every port), ignored for ICMP and
    /// ANY. `cidr`: an IPv4 network (`10.0.0.0/24`, `0.0.0.0/0`; an address alone is its
    /// /32). `action`: `ALLOW` or `DENY`. A template has at most the `firewall_rules` quota
    /// of rules. Servers using the template follow within a second.
    #[since(2)]
    write AddFirewallRule(
        template_id: i64,
        direction: String,
        protocol: String,
        port_from: Option<i64>,
        port_to: Option<i64>,
        cidr: String,
        action: String,
        position: Option<i64>,
    ) -> firewall_rule: FirewallRule = firewall::add_firewall_rule;
    /// Moves a rule of a firewall template to `position` (1 is first; beyond the last: last).
    #[since(2)]
    write MoveFirewallRule(rule_id: i64, position: i64) -> firewall_rule: FirewallRule =
        firewall::move_firewall_rule;
    /// Removes a rule from its firewall template. Returns 1.
    #[since(2)]
    write RemoveFirewallRule(rule_id: i64) -> result: i64 = firewall::remove_firewall_rule;
    /// Lists the caller's firewall templates with their rules in order and the servers using
    /// them, by id: at most `page_size` (1 to 1000; omitted: 1000) with an id above `after_id`
    /// (omitted: from the first); pass the last `firewall_template_id` of a page as
    /// `after_id` to get the next.
    #[since(2)]
    read ListFirewallTemplates(
        page_size: Option<i64>,
        after_id: Option<i64>,
    ) -> firewall_templates: Vec<FirewallTemplate> = firewall::list_firewall_templates;
    /// Renames a firewall template.
    #[since(2)]
    write RenameFirewallTemplate(template_id: i64, name: String) ->
        firewall_template: FirewallTemplate = firewall::rename_firewall_template;
    /// Deletes a firewall template no server uses (CONFLICT naming them otherwise). Returns 1.
    #[since(2)]
    write DeleteFirewallTemplate(template_id: i64) -> result: i64 =
        firewall::delete_firewall_template;
    /// Has a server use a firewall template of its VDC (`template_id` -1 or nil: none, and
    /// every packet the platform allows passes again). Takes effect on the running server
    /// within a second; connections already open stay open. Returns the server.
    #[since(2)]
    write ApplyFirewallTemplate(server_id: i64, template_id: Option<i64>) -> server: Server =
        server::apply_firewall_template;
    /// Stores an SSH public key for the caller's servers: one line in OpenSSH's format, as in
    /// `id_ed25519.pub` (Ed25519, ECDSA, RSA of at least 2048 bits, or a FIDO security key;
    /// not DSA). Names and keys are unique per customer; at most 100 keys.
    #[since(2)]
    write CreateSSHKey(name: String, public_key: String) -> ssh_key: SshKey =
        ssh_key::create_ssh_key;
    /// Lists the caller's SSH public keys, oldest first, with their SHA-256 fingerprints: at
    /// most `page_size` (1 to 1000; omitted: 1000) with an id above `after_id` (omitted: from
    /// the first); pass the last `ssh_key_id` of a page as `after_id` to get the next.
    #[since(2)]
    read ListSSHKeys(page_size: Option<i64>, after_id: Option<i64>) -> ssh_keys: Vec<SshKey> =
        ssh_key::list_ssh_keys;
    /// Deletes one of the caller's SSH keys. Servers given it no longer offer it to their
    /// first boot (a guest that installed it keeps it). Returns 1.
    #[since(2)]
    write DeleteSSHKey(ssh_key_id: i64) -> result: i64 = ssh_key::delete_ssh_key;
    /// Starts a server. Returns a job id.
    write StartServer(server_id: i64) -> job_id: i64 = server::start_server;
    /// Stops a server: `stop_method` 1 asks the guest to shut down, 2 powers off at once.
    /// Returns a job id.
    write StopServer(server_id: i64, stop_method: i64) -> job_id: i64 = server::stop_server;
    /// Returns the last 64 KiB of a server's serial console (the current or last boot), as
    /// text: control characters other than tab and newline appear as Unicode control pictures.
    read GetConsoleLog(server_id: i64) -> console_log: String = server::get_console_log;
    /// Opens the way to an interactive console of a running server: `kind` is `screen` (the
    /// graphical screen and keyboard, RFB as VNC speaks it: a stock noVNC client works) or
    /// `serial` (the first serial port's raw bytes, which GetConsoleLog keeps logging). Returns
    /// a WebSocket URL and a one-time token: connect to `url?token=<token>` within 60 seconds
    /// (`expires`), from a page of this server or a client sending no `Origin`. The token
    /// works for one connection, by the caller, to this server; stopping or destroying the
    /// server closes the connection. Consoles open at once are limited per customer and per
    /// server (LIMIT_EXCEEDED), and a connection idle too long is closed. Every console opened
    /// is in the audit trail (`OpenScreenConsole`, `OpenSerialConsole`).
    #[since(2)]
    read GetConsoleAccess(server_id: i64, kind: String) -> console_access: ConsoleAccess =
        console::get_console_access;
    /// Fetches a disk image from a URL into a new disk (or, with `make_image`, a new private
    /// image). The file may be gzip, xz or zstd compressed; its format is recognised by its
    /// bytes: raw, ISO 9660 (a CD), or qcow2, VMDK, VHD or VHDX, which are inspected (an
    /// image naming a backing or external file, or otherwise unsafe, fails with UNSAFE_IMAGE)
    /// and converted into a raw disk (the job's phase is then `converting`); GetDisk and
    /// ListImages show it as `source_format`. `checksum` is over the file as fetched
    /// (uncompressed, before any conversion): hex recognised by its length (MD5, SHA-1,
    /// SHA-256, SHA-512), or written `sha256:<hex>` or `{SHA-256}<hex>` (md5, sha1, sha256,
    /// sha512, any case). Returns a job id.
    write FetchDisk(
        url: String,
        checksum: Option<String>,
        conn_user: Option<String>,
        conn_pass: Option<String>,
        name: String,
        disk_productoffer_id: i64,
        vdc_id: i64,
        make_image: bool,
        image_default_username: Option<String>,
    ) -> job_id: i64 = fetch::fetch_disk;
    /// Returns one job.
    read GetJob(job_id: i64) -> job: Job = job::get_job;
    /// Lists the caller's jobs, newest first: at most `page_size` (1 to 1000; omitted: 1000)
    /// with a `job_id` below `before_id` (omitted: from the newest); pass the last `job_id` of
    /// a page as `before_id` to get the next. `status` (optional: 1, 2, 3, 4, 6 or 7, see Job)
    /// and `job_type` (optional: FetchDisk, CreateImage, StartServer, StopServer,
    /// DestroyServer, ApplyFirewall, CheckImage, CheckDisk, CleanImage) keep the jobs of that
    /// status and of that type.
    read ListJobs(
        #[since(2)] page_size: Option<i64>,
        #[since(2)] before_id: Option<i64>,
        #[since(2)] status: Option<i64>,
        #[since(2)] job_type: Option<String>,
    ) -> jobs: Vec<Job> = job::list_jobs;
    /// Cancels a job that has not finished. Returns the job.
    write CancelJob(job_id: i64) -> job: Job = job::cancel_job;
    /// Waits until a job has finished or `timeout_seconds` (at most 300) have passed, and
    /// returns the job as it then is.
    read WaitForJob(job_id: i64, timeout_seconds: i64) -> job: Job = job::wait_for_job;
    /// Tells the caller who it is: its customer id and uuid, and its billing entity.
    read GetCustomer() -> customer: Customer = customer::get_customer;
    /// Shows the caller's quotas: for each, the limit (-1: no limit) and what is in use now.
    /// A call that would go past a limit fails with QUOTA_EXCEEDED, naming the quota, and
    /// makes nothing.
    #[since(2)]
    read GetQuota() -> quota: Quota = quota::get_quota;
    /// Lists the caller's usage lines (servers made from billed images, bytes fetched) created
    /// at or after `from` and before `to` (RFC 3339 times; either may be omitted), oldest
    /// first: at most `page_size` (1 to 1000; omitted: 1000) after the line `after_id`
    /// (omitted: from the first; one that is not the caller's is INVALID_ARGUMENT); pass the
    /// last `usage_id` of a page as `after_id` to get the next.
    read ListUsage(
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        #[since(2)] page_size: Option<i64>,
        #[since(2)] after_id: Option<i64>,
    ) -> usage: Vec<UsageRecord> = usage::list_usage;
    /// Lists audit events, newest first: one for each call that changed something or tried to
    /// (over SOAP, JSON, the control panel or the command line) and for each failed login.
    /// Customers see their own (including failed logins with their e-mail), administrators
    /// everyone's. At most
    /// `page_size` events (1 to 1000, 100 when omitted) with `audit_id` below `before_id`
    /// (omitted: from the newest): pass the last `audit_id` of a page to get the next.
    #[since(2)]
    read ListAuditEvents(
        page_size: Option<i64>,
        before_id: Option<i64>,
    ) -> events: Vec<AuditEvent> = audit::list_audit_events;
    /// Makes an authentication token: send it as the HTTP Basic user name (with any password,
    /// or none) or as `Authorization: Bearer <token>` instead of the e-mail and password; calls
    /// made with it act as the caller. It lives `expiry_seconds` (omitted: the server's
    /// default, 1 hour unless the operator changed it; more than the server's maximum is
    /// INVALID_ARGUMENT); a token made with a token expires no later than it. `name` (up to
    /// 100 characters) is only for telling tokens apart. The token is shown this once.
    #[since(2)]
    write GetAuthenticationToken(expiry_seconds: Option<i64>, name: Option<String>) ->
        authentication_token: AuthenticationToken = token::get_authentication_token;
    /// Lists the caller's authentication tokens that have neither expired nor been revoked,
    /// oldest first, without their secrets: at most `page_size` (1 to 1000; omitted: 1000)
    /// with an id above `after_id` (omitted: from the first); pass the last `token_id` of a
    /// page as `after_id` to get the next.
    #[since(2)]
    read ListAuthenticationTokens(
        page_size: Option<i64>,
        after_id: Option<i64>,
    ) -> authentication_tokens: Vec<AuthenticationTokenInfo> =
        token::list_authentication_tokens;
    /// Revokes one of the caller's authentication tokens, named by `token_id` or by the token
    /// itself (`token`), and every token made with it: they are refused from the next call
    /// on. Returns the token, without its secret.
    #[since(2)]
    write RevokeAuthenticationToken(token_id: Option<i64>, token: Option<String>) ->
        authentication_token: AuthenticationTokenInfo = token::revoke_authentication_token;
}

job_kinds!(pub static JOB_KINDS: AppState = [
    fetch::FetchDiskJob,
    create_image::CreateImageJob,
    server::StartServerJob,
    server::StopServerJob,
    server::DestroyServerJob,
    firewall::ApplyFirewallJob,
    hygiene::CheckImageJob,
    hygiene::CheckDiskJob,
    hygiene::CleanImageJob,
]);

#[cfg(test)]
mod tests {
    /// A node claims only the job types it knows, matched in SQL against their names joined
    /// by commas (`jobs::queue::claim`): a name is letters and digits alone.
    #[test]
    fn job_kind_names_are_words() {
        for kind in super::JOB_KINDS.iter() {
            assert!(
                !kind.name.is_empty() && kind.name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{}",
                kind.name
            );
        }
    }
}
