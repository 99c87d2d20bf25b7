<?php
// The platform how-to's Appendix 1 (fetch an ISO, create a server with a blank boot disk,
// attach the ISO, start the server), then watching the server boot from the CD on its serial
// console through SOAP GetConsoleLog, and powering it off.
// Environment: EXTILITY_USERNAME, EXTILITY_PASSWORD, EXTILITY_WSDL, EXTILITY_ISO_URL, and
// EXTILITY_MARKER (what the CD prints when it boots).
define("USERNAME", getenv("EXTILITY_USERNAME"));
define("PASSWORD", getenv("EXTILITY_PASSWORD"));
define("WSDL", getenv("EXTILITY_WSDL"));
$iso = getenv("EXTILITY_ISO_URL");
$marker = getenv("EXTILITY_MARKER");
$disk_name = 'ubuntu_lucid_desktop_iso';
$server_name = "Ubuntu Desktop";
define('BLANK_DISK_IMAGE', 66);
define('GB1_CPU1_PO', 18);
define('GB20_PO', 31);

$client = new SoapClient(WSDL, array("login" => USERNAME, "password" => PASSWORD,
    "trace" => 1, "exceptions" => 1));
$list_vdcs = $client->ListVDCs();
if (count($list_vdcs) == 0) {
    echo("No Virtual Data Centres Found\n");
    exit(1);
}
define('MY_VDC', $list_vdcs[0]->vdc_id);
$list_vlans = $client->ListVLANs(MY_VDC);
define('MY_VLAN', count($list_vlans) == 0 ? -1 : $list_vlans[0]->vlan_id);

$job_id = $client->fetchDisk($iso, null, null, null, $disk_name, GB20_PO, MY_VDC, false);
// WaitForJob instead of the appendix's GetJob-and-sleep loop: same outcome, no sleeping.
$job = $client->WaitForJob($job_id, 300);
if ($job->status != 1) {
    echo("Disk Fetching Failed: " . $job->error_message . "\n");
    exit(1);
}
echo("Disk is successfully fetched\n");

$server = $client->CreateServer(MY_VDC, MY_VLAN, $server_name, BLANK_DISK_IMAGE, GB1_CPU1_PO,
    array(GB20_PO));
$new_disk_id = 0;
foreach ($client->ListDisks(MY_VDC) as $disk) {
    if ($disk->disk_name == $disk_name) {
        $new_disk_id = $disk->disk_id;
        break;
    }
}
echo("Attaching the disk to the server\n");
if ($client->AttachDisk($server->server_id, $new_disk_id) != 1) {
    echo("AttachDisk failed\n");
    exit(1);
}
echo("Disk Attached Success\n");
$job = $client->WaitForJob($client->StartServer($server->server_id), 300);
if ($job->status != 1) {
    echo("StartServer failed: " . $job->error_message . "\n");
    exit(1);
}
echo("Server started\n");

// Poll the console until the CD has booted (two minutes at most).
$deadline = time() + 120;
while (strpos($log = $client->GetConsoleLog($server->server_id), $marker) === false) {
    if (time() > $deadline) {
        echo("The console never showed $marker:\n$log\n");
        exit(1);
    }
    usleep(200000);
}
echo("Console shows $marker\n");

$job = $client->WaitForJob($client->StopServer($server->server_id, 2), 300);
$status = $client->GetServer($server->server_id)->status;
if ($job->status != 1 || $status != 5) {
    echo("StopServer failed: job status $job->status, server status $status\n");
    exit(1);
}
echo("Server stopped\n");
