"""Loads the current version's WSDL with Python zeep and calls every operation of the control API.

Optional arguments left out are sent as nil (`xsd.Nil`): zeep sends every part of an rpc/encoded
message, so `call` fills the trailing ones the script leaves out (the paging arguments of the
List operations, say) with nil. (A script written for the first release runs unchanged against
version 1: zeep_first_release.py.) Environment: EXTILITY_WSDL_CURRENT (/v2/?wsdl), ALICE_EMAIL,
ALICE_PASSWORD. Exits non-zero on the first failure.
"""
import os
import sys

import zeep
from requests import Session
from zeep import xsd
from zeep.transports import Transport


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


session = Session()
session.auth = (os.environ["ALICE_EMAIL"], os.environ["ALICE_PASSWORD"])
client = zeep.Client(os.environ["EXTILITY_WSDL_CURRENT"], transport=Transport(session=session))
api = client.service

declared = {op for op in client.wsdl.bindings[next(iter(client.wsdl.bindings))]._operations}
called = set()


binding = client.wsdl.bindings[next(iter(client.wsdl.bindings))]


def call(op, *args):
    called.add(op)
    parts = len(binding._operations[op].input.abstract.parts)
    return getattr(api, op)(*args, *[xsd.Nil] * (parts - len(args)))


def fault_code(fault):
    return zeep.helpers.etree.tostring(fault.detail).decode()


def wait(job_id):
    job = call("WaitForJob", job_id, 60)
    check(job.status in (1, 3, 4), f"job {job_id} finished")
    return job


vdcs = call("ListVDCs")
vdc = vdcs[0].vdc_id
check(vdcs[0].vdc_name == "Default VDC", "ListVDCs")
spare_vdc = call("CreateVDC", "zeep vdc")
check(spare_vdc.vdc_name == "zeep vdc", "CreateVDC")
check([v.vdc_id for v in call("ListVDCs", 1, vdc)] == [spare_vdc.vdc_id], "ListVDCs, a page")
check(call("DeleteVDC", spare_vdc.vdc_id) == 1, "DeleteVDC")
vlan = call("CreateVLAN", vdc, "zeep vlan")
check(len(call("ListVLANs", vdc)) == 1, "CreateVLAN, ListVLANs")
check(any(o.product_offer_id == 18 for o in call("ListProductOffers", "server")), "ListProductOffers")
check(any(i.image_id == 66 for i in call("ListImages")), "ListImages")
disk = call("CreateDisk", vdc, "zeep disk", 29, 0)
check(call("GetDisk", disk.disk_id).disk_name == "zeep disk", "CreateDisk, GetDisk")
check(len(call("ListDisks", vdc)) == 1, "ListDisks")
check(call("RenameDisk", disk.disk_id, "Zeep Disk").disk_name == "Zeep Disk", "RenameDisk")
check([d.disk_id for d in call("ListDisks", vdc, 10, 0, "zEEP d")] == [disk.disk_id],
      "ListDisks, a page by name")
check(call("ResizeDisk", disk.disk_id, 30).capacity == 10 << 30, "ResizeDisk")
try:
    call("ResizeDisk", disk.disk_id, 29)
    check(False, "ResizeDisk never shrinks")
except zeep.exceptions.Fault as fault:
    check("INVALID_ARGUMENT" in fault_code(fault), "ResizeDisk never shrinks")
try:
    call("DeleteVDC", vdc)
    check(False, "DeleteVDC of a VDC holding a disk")
except zeep.exceptions.Fault as fault:
    check("CONFLICT" in fault_code(fault) and "1 disk" in fault.message,
          "DeleteVDC of a VDC holding a disk")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJPq6JkZdznBikD0F5uhrPqrkPdmj7iMqIo7tz12MBpw "
       "zeep@test")
key = call("CreateSSHKey", "zeep key", KEY)
check(key.fingerprint.startswith("SHA256:") and key.key_type == "ssh-ed25519"
      and key.public_key == KEY, "CreateSSHKey")
check([k.ssh_key_id for k in call("ListSSHKeys")] == [key.ssh_key_id], "ListSSHKeys")
keyed = call("CreateServer", vdc, -1, "zeep keyed", 66, 18, {"item": [29]},
             {"item": [key.ssh_key_id]})
check(list(keyed.ssh_key_ids) == [key.ssh_key_id], "CreateServer with SSH keys")
check(call("DeleteSSHKey", key.ssh_key_id) == 1, "DeleteSSHKey")
check(not call("GetServer", keyed.server_id).ssh_key_ids, "a deleted key leaves its servers")
wait(call("DestroyServer", keyed.server_id))
server = call("CreateServer", vdc, vlan.vlan_id, "zeep server", 66, 18, {"item": [31, 29]},
              xsd.Nil)
check(len(server.disks) == 2, "CreateServer with two disk offers")
check(call("GetServer", server.server_id).server_name == "zeep server", "GetServer")
check(call("RenameServer", server.server_id, "zeep server").server_name == "zeep server",
      "RenameServer")
changed = call("ChangeServerProductOffer", server.server_id, 19)
check(changed.product_offer_id == 19 and changed.processors == 2, "ChangeServerProductOffer")
check(call("ChangeServerProductOffer", server.server_id, 18).processors == 1,
      "ChangeServerProductOffer back")
check(server.ip_address is not None and server.mac_address.startswith("52:54:00:"),
      "a server on a VLAN has an address")
forward = call("AddPortForward", server.server_id, 22)
check(forward.guest_port == 22 and forward.host_port >= 1, "AddPortForward")
check(len(call("ListPortForwards", server.server_id)) == 1, "ListPortForwards")
check(call("RemovePortForward", forward.port_forward_id) == 1, "RemovePortForward")
template = call("CreateFirewallTemplate", vdc, "zeep firewall", "DENY", "ALLOW")
check(template.default_inbound == "DENY" and not template.rules, "CreateFirewallTemplate")
tid = template.firewall_template_id
ssh = call("AddFirewallRule", tid, "IN", "TCP", 22, xsd.Nil, "10.0.0.0/8", "ALLOW", xsd.Nil)
check(ssh.position == 1 and ssh.port_to == 22, "AddFirewallRule")
icmp = call("AddFirewallRule", tid, "IN", "ICMP", xsd.Nil, xsd.Nil, "0.0.0.0/0", "ALLOW", 1)
check(icmp.position == 1 and icmp.port_from is None, "AddFirewallRule first")
check(call("MoveFirewallRule", icmp.firewall_rule_id, 2).position == 2, "MoveFirewallRule")
check(call("ApplyFirewallTemplate", server.server_id, tid).firewall_template_id == tid,
      "ApplyFirewallTemplate")
listed = call("ListFirewallTemplates")
check([r.firewall_rule_id for r in listed[0].rules] == [ssh.firewall_rule_id, icmp.firewall_rule_id]
      and listed[0].server_ids == [server.server_id], "ListFirewallTemplates")
check(call("ApplyFirewallTemplate", server.server_id, xsd.Nil).firewall_template_id is None,
      "ApplyFirewallTemplate nil takes it away")
check(call("RemoveFirewallRule", icmp.firewall_rule_id) == 1, "RemoveFirewallRule")
check(call("RenameFirewallTemplate", tid, "zeep").name == "zeep", "RenameFirewallTemplate")
check(call("DeleteFirewallTemplate", tid) == 1, "DeleteFirewallTemplate")
check(len(call("ListServers", vdc)) == 1, "ListServers")
check([s.server_id for s in call("ListAllServers")] == [server.server_id], "ListAllServers")
check(sorted(d.disk_id for d in call("ListAllDisks"))
      == sorted([disk.disk_id] + [d.disk_id for d in server.disks]), "ListAllDisks")
check([d.disk_id for d in call("ListAllDisks", 10, 0, "zEEP d")] == [disk.disk_id],
      "ListAllDisks, a page by name")
check(call("AttachDisk", server.server_id, disk.disk_id, xsd.Nil) == 1, "AttachDisk")
check(call("DetachDisk", server.server_id, disk.disk_id) == 1, "DetachDisk")
job = call("StartServer", server.server_id)
check(call("GetJob", job).job_type == "StartServer", "StartServer, GetJob")
check(wait(job).status == 1, "the server started")
# zeep reads an empty string element (a console that printed nothing yet) as None.
console = call("GetConsoleLog", server.server_id)
check(console is None or isinstance(console, str), "GetConsoleLog")
access = call("GetConsoleAccess", server.server_id, "serial")
check(access.kind == "serial" and access.token.startswith("xcon_")
      and access.url.endswith("/console/ws"), "GetConsoleAccess")
check(wait(call("StopServer", server.server_id, 2)).status == 1, "StopServer")
customer = call("GetCustomer")
check(customer.email == os.environ["ALICE_EMAIL"] and not customer.is_admin, "GetCustomer")
quota = call("GetQuota")
check(quota.servers_used == 1 and quota.running_vcpus_used == 0 and quota.servers_limit == -1
      and quota.concurrent_jobs_limit == 100, "GetQuota")
image_job = wait(call("CreateImage", server.disks[0].disk_id, "zeep image", "root", True))
check(image_job.status == 1 and image_job.item_type == "image", "CreateImage")
image_id = image_job.item_id
check(call("RenameImage", image_id, "zeep image 2").image_name == "zeep image 2", "RenameImage")
# Two parts in the current version: the result and the image's hygiene report (zeep gives an
# answer of several parts as an object of them).
published = call("PublishImage", image_id, customer.billing_entity_uuid, xsd.Nil)
check(published.result == 1 and published.hygiene.image_id == image_id
      and published.hygiene.status == "not_checked" and not published.hygiene.findings,
      "PublishImage, with the image's hygiene report")
shares = call("ListImageShares", image_id)
check(shares[0].kind == "billing_entity" and shares[0].allow_republish is False, "ListImageShares")
check(call("PublishImage", image_id, customer.billing_entity_uuid, True).result == 1,
      "PublishImage allowing re-publication")
check(call("ListImageShares", image_id)[0].allow_republish is True, "ListImageShares allow_republish")
check(call("RevokeImage", image_id, customer.billing_entity_uuid) == 1, "RevokeImage")
report = call("GetImageReport", image_id)
check(report.image_id == image_id and report.status == "not_checked" and not report.findings,
      "GetImageReport")
check(call("GetDiskReport", disk.disk_id).status == "not_checked", "GetDiskReport")
# Refusals, so that no job (a minute of libguestfs) changes the job counts below.
for op, args, code in [("CheckImage", (66,), "PERMISSION_DENIED"),
                       ("CheckDisk", (999999,), "NOT_FOUND"),
                       ("CleanImage", (image_id, {"item": ["format_disk"]}, {"item": ["/root/test.sh"]}, "c"),
                        "INVALID_ARGUMENT")]:
    try:
        call(op, *args)
        check(False, f"{op} is refused")
    except zeep.exceptions.Fault as fault:
        check(code in fault_code(fault), f"{op} is refused with {code}")
try:
    call("SetImageProductOffer", image_id, 40)
    check(False, "SetImageProductOffer is for administrators")
except zeep.exceptions.Fault as fault:
    check("PERMISSION_DENIED" in zeep.helpers.etree.tostring(fault.detail).decode(),
          "SetImageProductOffer is for administrators")
snapshot = call("CreateDiskSnapshot", disk.disk_id, "zeep snapshot")
check(len(call("ListSnapshots", disk.disk_id)) == 1, "CreateDiskSnapshot, ListSnapshots")
clone = call("CloneDisk", snapshot.snapshot_id, "zeep clone", vdc)
check(clone.disk_id != disk.disk_id, "CloneDisk")
check(call("RevertDisk", snapshot.snapshot_id).disk_id == disk.disk_id, "RevertDisk")
check(call("DeleteDisk", clone.disk_id) == 1, "the clone can go")
check(call("DeleteSnapshot", snapshot.snapshot_id) == 1, "DeleteSnapshot")
check(call("DeleteImage", image_id) == 1, "DeleteImage")
check(call("ListUsage", xsd.Nil, xsd.Nil) is not None, "ListUsage")
fetch = call("FetchDisk", "http://images.example.com/a.img", xsd.Nil, xsd.Nil, xsd.Nil, "f", 31, vdc, False, xsd.Nil)
try:
    check(call("CancelJob", fetch).status in (2, 3, 4), "FetchDisk, CancelJob")
except zeep.exceptions.Fault as fault:  # the fetch may already have failed: there is no such host
    check("already finished" in fault.message, "FetchDisk, CancelJob of a finished job")
check(len(call("ListJobs")) == 5, "ListJobs")
page = call("ListJobs", 2)
rest = call("ListJobs", 1000, page[-1].job_id)
check(len(page) == 2 and len(rest) == 3 and rest[0].job_id < page[-1].job_id, "ListJobs, pages")
check([j.job_type for j in call("ListJobs", xsd.Nil, xsd.Nil, 1, "StartServer")] == ["StartServer"],
      "ListJobs by status and type")
check(wait(call("DestroyServer", server.server_id)).status == 1, "DestroyServer")
check(call("DeleteVLAN", vlan.vlan_id) == 1, "DeleteVLAN")
check(call("DeleteDisk", disk.disk_id) == 1, "DeleteDisk")
try:
    call("GetDisk", disk.disk_id)
    check(False, "a deleted disk is gone")
except zeep.exceptions.Fault as fault:
    check(fault.message == f"disk {disk.disk_id} does not exist", "faults carry the message")
    check(fault.detail is not None and "NOT_FOUND" in zeep.helpers.etree.tostring(fault.detail).decode(),
          "and the ExtilityException detail")
events = call("ListAuditEvents", xsd.Nil, xsd.Nil)
check(events[0].operation == "DeleteDisk" and events[0].via == "soap"
      and events[0].ids == f"disk_id={disk.disk_id}" and events[0].outcome == "OK", "ListAuditEvents")
check(len(call("ListAuditEvents", 2, events[0].audit_id)) == 2, "ListAuditEvents, a page")

token = call("GetAuthenticationToken", 600, "zeep script")
check(token.token.startswith("ext_") and token.name == "zeep script", "GetAuthenticationToken")
token_session = Session()
token_session.auth = (token.token, "")
scripted = zeep.Client(os.environ["EXTILITY_WSDL_CURRENT"], transport=Transport(session=token_session))
check(scripted.service.GetCustomer().email == os.environ["ALICE_EMAIL"], "a token as the Basic user name")
tokens = call("ListAuthenticationTokens")
check(len(tokens) == 1 and tokens[0].token_id == token.token_id and tokens[0].last_used is not None
      and not tokens[0].current, "ListAuthenticationTokens")
check(call("RevokeAuthenticationToken", token.token_id, xsd.Nil).revoked is not None,
      "RevokeAuthenticationToken")
try:
    scripted.service.GetCustomer()
    check(False, "a revoked token is refused")
except (zeep.exceptions.Fault, zeep.exceptions.TransportError):
    check(True, "a revoked token is refused")

check(called == declared, f"every operation was called (missing: {declared - called})")
print("all done")
