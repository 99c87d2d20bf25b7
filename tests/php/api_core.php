<?php
// Every operation of the control API from PHP's SoapClient, with faults and isolation.
// Environment: EXTILITY_WSDL, ALICE_EMAIL, ALICE_PASSWORD, BOB_EMAIL, BOB_PASSWORD.

function check($condition, $what) {
    if (!$condition) {
        fwrite(STDERR, "FAILED: $what\n");
        exit(1);
    }
    echo "ok: $what\n";
}

function client($email, $password) {
    return new SoapClient(getenv("EXTILITY_WSDL"), array(
        "login" => $email, "password" => $password,
        "trace" => 1, "exceptions" => 1, "cache_wsdl" => WSDL_CACHE_NONE));
}

function fault_of($fn) {
    try {
        $fn();
    } catch (SoapFault $e) {
        return $e;
    }
    return null;
}

function wait_job($client, $job_id) {
    $job = $client->WaitForJob($job_id, 60);
    check(in_array($job->status, array(1, 3, 4)), "job $job_id finished (status $job->status)");
    return $job;
}

$alice = client(getenv("ALICE_EMAIL"), getenv("ALICE_PASSWORD"));
$bob = client(getenv("BOB_EMAIL"), getenv("BOB_PASSWORD"));

// The WSDL describes every operation.
$functions = implode("\n", $alice->__getFunctions());
foreach (array("ListVDCs", "CreateVDC", "ListVLANs", "CreateVLAN", "ListProductOffers",
               "ListImages", "ListDisks", "GetDisk", "CreateDisk", "DeleteDisk", "ListServers",
               "GetServer", "CreateServer", "DestroyServer", "AttachDisk", "DetachDisk",
               "StartServer", "StopServer", "FetchDisk", "GetJob", "ListJobs", "CancelJob",
               "WaitForJob", "GetQuota", "ListAuditEvents", "GetAuthenticationToken",
               "ListAuthenticationTokens", "RevokeAuthenticationToken") as $op) {
    check(strpos($functions, " $op(") !== false, "the WSDL declares $op");
}

// VDCs and VLANs; arrays stay arrays with one element.
$vdcs = $alice->ListVDCs();
check(is_array($vdcs) && count($vdcs) == 1, "ListVDCs returns an array of one");
$vdc = $vdcs[0]->vdc_id;
check($vdcs[0]->vdc_name == "Default VDC", "the default VDC");
$vlans = $alice->ListVLANs($vdc);
check(is_array($vlans) && count($vlans) == 0, "no VLANs yet");
$vlan = $alice->CreateVLAN($vdc, "front");
check($vlan->vlan_name == "front" && $vlan->vdc_id == $vdc, "CreateVLAN");
$vlans = $alice->ListVLANs($vdc);
check(count($vlans) == 1 && $vlans[0]->vlan_id == $vlan->vlan_id, "ListVLANs has the VLAN");
$second = $alice->CreateVDC("Second");
check($second->vdc_name == "Second" && $second->number_of_servers == 0, "CreateVDC");

// Catalogue.
$offers = $alice->ListProductOffers("server");
$ids = array_map(function ($o) { return $o->product_offer_id; }, $offers);
check(in_array(18, $ids), "server offer 18 is listed");
$disk_offers = $alice->ListProductOffers("disk");
$sizes = array();
foreach ($disk_offers as $o) { $sizes[$o->product_offer_id] = $o->disk_size; }
check($sizes[31] == 20 * 1024 * 1024 * 1024, "disk offer 31 is 20 GB");
check(count($alice->ListProductOffers("")) == count($offers) + count($disk_offers), "empty type lists all");
$images = $alice->ListImages();
$names = array();
foreach ($images as $i) { $names[$i->image_id] = $i->image_name; }
check($names[66] == "Blank disk", "image 66 is the blank disk");

// Disks.
$disk = $alice->CreateDisk($vdc, "data", 29, 0);
check($disk->capacity == 1024 * 1024 * 1024 && $disk->status == "available", "CreateDisk");
check($disk->server_id === null, "a new disk is not attached");
$got = $alice->GetDisk($disk->disk_id);
check($got->disk_uuid == $disk->disk_uuid, "GetDisk");
check(count($alice->ListDisks($vdc)) == 1, "ListDisks");

// Servers.
$server = $alice->CreateServer($vdc, $vlan->vlan_id, "web", 66, 18, array(31));
check($server->status == 5 && count($server->disks) == 1, "CreateServer with one disk offer");
check(strlen($server->initial_password) >= 12, "an initial password");
$server2 = $alice->CreateServer($vdc, -1, "db", 66, 18, array(31, 29));
check(count($server2->disks) == 2 && $server2->vlan_id === null, "CreateServer with two disk offers, no VLAN");
check(count($alice->ListServers($vdc)) == 2, "ListServers");
check($alice->AttachDisk($server->server_id, $disk->disk_id) == 1, "AttachDisk returns 1");
$got = $alice->GetServer($server->server_id);
check(count($got->disks) == 2 && $got->disks[1]->disk_id == $disk->disk_id, "the disk is attached last");
check($alice->DetachDisk($server->server_id, $disk->disk_id) == 1, "DetachDisk returns 1");
check($alice->AttachDisk($server->server_id, $disk->disk_id, 0) == 1, "AttachDisk at index 0");
check($alice->GetServer($server->server_id)->disks[0]->disk_id == $disk->disk_id, "the disk is first");

// Jobs.
$job_id = $alice->StartServer($server->server_id);
check(is_int($job_id) && $job_id > 0, "StartServer returns a job id");
$job = $alice->GetJob($job_id);
check($job->job_id == $job_id && $job->job_type == "StartServer", "GetJob");
$job = wait_job($alice, $job_id);
check($job->status == 1 && $job->progress == 100, "the start job succeeded");
check($alice->GetServer($server->server_id)->status == 2, "the server runs");
$f = fault_of(function () use ($alice, $server, $disk) { $alice->DetachDisk($server->server_id, $disk->disk_id); });
check($f !== null && $f->faultcode == "SOAP-ENV:Client", "detaching from a running server is refused");
check(strpos($f->faultstring, "running") !== false, "and the fault says why: " . $f->faultstring);
check($f->detail->ExtilityException->errorCode == "CONFLICT", "with errorCode CONFLICT");
$job_id = $alice->StopServer($server->server_id, 2);
check(wait_job($alice, $job_id)->status == 1, "StopServer");
check($alice->GetServer($server->server_id)->status == 5, "the server is stopped");
$quota = $alice->GetQuota();
check($quota->servers_used == 2 && $quota->servers_limit == -1 && $quota->running_vcpus_used == 0
      && $quota->storage_bytes_used == 42 * 1024 * 1024 * 1024 && $quota->concurrent_jobs_limit == 100,
      "GetQuota: limits and use");
$jobs = $alice->ListJobs();
check(count($jobs) == 2 && $jobs[0]->job_id == $job_id, "ListJobs, newest first");
$f = fault_of(function () use ($alice, $job_id) { $alice->CancelJob($job_id); });
check($f !== null, "a finished job cannot be cancelled");
$fetch = $alice->FetchDisk("http://images.example.com/x.img", null, null, null, "fetched", 31, $vdc, false);
check(is_int($fetch), "FetchDisk returns a job id");
// The fetch may fail before the cancel arrives (there is no such host); both are fine.
$f = fault_of(function () use ($alice, $fetch, &$job) { $job = $alice->CancelJob($fetch); });
check($f === null ? in_array($job->status, array(2, 3, 4)) : strpos($f->faultstring, "already finished") !== false,
      "CancelJob returns the job, or says it has finished");
check($alice->DetachDisk($server->server_id, $disk->disk_id) == 1, "detach while stopped");
$job_id = $alice->DestroyServer($server2->server_id);
check(wait_job($alice, $job_id)->status == 1, "DestroyServer");
check(count($alice->ListServers($vdc)) == 1, "the server is gone");
$snapshot = $alice->CreateDiskSnapshot($disk->disk_id, "before");
check(count($alice->ListSnapshots($disk->disk_id)) == 1, "CreateDiskSnapshot, ListSnapshots");
check($alice->DeleteSnapshot($snapshot->snapshot_id) == 1, "DeleteSnapshot returns 1");
check(count($alice->ListSnapshots($disk->disk_id)) == 0, "the snapshot is gone");
$f = fault_of(function () use ($alice) { $alice->SetImageProductOffer(66, 40); });
check($f !== null && $f->detail->ExtilityException->errorCode == "PERMISSION_DENIED",
      "SetImageProductOffer is for administrators");
check($alice->DeleteDisk($disk->disk_id) == 1, "DeleteDisk returns 1");
$events = $alice->ListAuditEvents(null, null);
check(is_array($events) && $events[0]->operation == "DeleteDisk" && $events[0]->via == "soap"
      && $events[0]->outcome == "OK" && $events[0]->ids == "disk_id=" . $disk->disk_id
      && $events[0]->address == "127.0.0.1", "ListAuditEvents: the newest first");

// Firewall templates: rules in order, applied to a server and taken away.
$t = $alice->CreateFirewallTemplate($vdc, "ssh only", "DENY", "ALLOW");
check($t->default_inbound == "DENY" && is_array($t->rules) && count($t->rules) == 0,
      "CreateFirewallTemplate");
$rule = $alice->AddFirewallRule($t->firewall_template_id, "IN", "TCP", 22, 22, "10.64.0.0/24", "ALLOW", null);
check($rule->position == 1 && $rule->port_from == 22 && $rule->cidr == "10.64.0.0/24", "AddFirewallRule");
$first = $alice->AddFirewallRule($t->firewall_template_id, "OUT", "ICMP", null, null, "0.0.0.0/0", "DENY", 1);
check($first->position == 1 && $first->port_from === null, "AddFirewallRule first, ICMP without ports");
check($alice->MoveFirewallRule($first->firewall_rule_id, 2)->position == 2, "MoveFirewallRule");
$applied = $alice->ApplyFirewallTemplate($server->server_id, $t->firewall_template_id);
check($applied->firewall_template_id == $t->firewall_template_id, "ApplyFirewallTemplate");
$listed = $alice->ListFirewallTemplates(null, null);
check(count($listed) == 1 && count($listed[0]->rules) == 2
      && $listed[0]->rules[0]->firewall_rule_id == $rule->firewall_rule_id
      && $listed[0]->server_ids[0] == $server->server_id, "ListFirewallTemplates: rules in order, servers");
$f = fault_of(function () use ($alice, $t) { $alice->DeleteFirewallTemplate($t->firewall_template_id); });
check($f !== null && $f->detail->ExtilityException->errorCode == "CONFLICT", "an applied template stays");
$f = fault_of(function () use ($alice, $t) {
    $alice->AddFirewallRule($t->firewall_template_id, "IN", "TCP", 22, 22, "10.0.0.1/8", "ALLOW", null); });
check($f !== null && $f->detail->ExtilityException->errorCode == "INVALID_ARGUMENT", "a CIDR with host bits");
$f = fault_of(function () use ($bob, $t) { $bob->RenameFirewallTemplate($t->firewall_template_id, "mine"); });
check($f !== null && $f->detail->ExtilityException->errorCode == "NOT_FOUND", "alice's template is not bob's");
check($alice->ApplyFirewallTemplate($server->server_id, -1)->firewall_template_id === null,
      "ApplyFirewallTemplate -1 takes it away");
check($alice->RemoveFirewallRule($first->firewall_rule_id) == 1, "RemoveFirewallRule");
check($alice->RenameFirewallTemplate($t->firewall_template_id, "ssh")->name == "ssh", "RenameFirewallTemplate");
check($alice->DeleteFirewallTemplate($t->firewall_template_id) == 1, "DeleteFirewallTemplate");

// A token as the SoapClient's login, with an empty password, until it is revoked.
$token = $alice->GetAuthenticationToken(600, "php script");
check(strpos($token->token, "ext_") === 0 && $token->name == "php script", "GetAuthenticationToken");
$scripted = client($token->token, "");
check($scripted->GetCustomer()->email == getenv("ALICE_EMAIL"), "a token as the SoapClient login");
$tokens = $scripted->ListAuthenticationTokens();
check(is_array($tokens) && count($tokens) == 1 && $tokens[0]->current === true
      && !isset($tokens[0]->token), "ListAuthenticationTokens: one, without its secret");
check($alice->RevokeAuthenticationToken($token->token_id, null)->token_id == $token->token_id,
      "RevokeAuthenticationToken");
$f = fault_of(function () use ($scripted) { $scripted->ListVDCs(); });
check($f !== null, "a revoked token is refused");

// Faults: a clear message and the ExtilityException detail.
$f = fault_of(function () use ($alice) { $alice->GetDisk(987654); });
check($f->faultcode == "SOAP-ENV:Client" && $f->faultstring == "disk 987654 does not exist", "GetDisk of a missing disk");
$f = fault_of(function () use ($alice) { $alice->CreateDisk(1, "", 31, 0); });
check(strpos($f->faultstring, "'name'") !== false, "an empty name is named: " . $f->faultstring);

// Isolation: bob sees nothing of alice's, and her ids look missing to him.
check(count($bob->ListVDCs()) == 1 && $bob->ListVDCs()[0]->vdc_id != $vdc, "bob has his own VDC");
$f = fault_of(function () use ($bob, $server) { $bob->GetServer($server->server_id); });
check($f->faultstring == "server " . $server->server_id . " does not exist", "alice's server looks missing to bob");
$f = fault_of(function () use ($bob, $vdc) { $bob->ListDisks($vdc); });
check($f->faultstring == "VDC $vdc does not exist", "alice's VDC looks missing to bob");
$f = fault_of(function () use ($bob, $server) { $bob->StartServer($server->server_id); });
check($f !== null, "bob cannot start alice's server");
check(count($bob->ListJobs()) == 0, "bob has no jobs");
check($alice->GetServer($server->server_id)->status == 5, "alice's server was not touched");

// Bad credentials.
$mallory = client(getenv("ALICE_EMAIL"), "guess");
$f = fault_of(function () use ($mallory) { $mallory->ListVDCs(); });
check($f !== null, "a wrong password is refused");
echo "all done\n";
