<?php
/**
* Your username
*/
define("USERNAME",getenv("EXTILITY_USERNAME"));
/**
* Your Password
*/
define("PASSWORD",getenv("EXTILITY_PASSWORD"));
/**
* Your image location
*/
$iso = getenv("EXTILITY_ISO_URL");
/**
* Name you want to give the disk
*/
$disk_name = 'ubuntu_lucid_desktop_iso';
/**
* The name of your Virtual Server
*/
$server_name = "Ubuntu Desktop";
/**
* The API WSDL location
*/
define("WSDL",getenv("EXTILITY_WSDL"));
// Following defines are all ID's you can get them by doing list calls
/**
* Blank disk required to install to
*/
define('BLANK_DISK_IMAGE',66);
/**
* Virtual Server Profuct Offer 1 CPU / 1 GB RAM
*/
define('GB1_CPU1_PO',18);
/**
* Product Offer For a 20GB Disk
*/
define('GB20_PO',31);
/**
* Soap Client to connect to the API
*/
$client = new SoapClient(WSDL, array("login" => USERNAME, "password" => PASSWORD,
"trace" => 1, "exceptions" => 1));
$list_vdcs = $client->ListVDCs();
if(count($list_vdcs) == 0) {
echo("No Virtual Data Centres Found n");
exit(1);
}
$my_vdc = $list_vdcs[0]->vdc_id;
/**
* Your specified Virtual Data Centre Identifier
*/
define('MY_VDC',$my_vdc);
echo("Using vdc $my_vdc n");
$list_vlans = $client->ListVLANs(MY_VDC);
if(count($list_vlans) == 0){
$my_vlan = -1;
}else{
$my_vlan = $list_vlans[0]->vlan_id;
}
/**
* Your specified Virtual Local Area Network Identifier
*/
define('MY_VLAN',$my_vlan);
/**
* Fetch ISO to DISK
*/
$job_id = $client->fetchDisk($iso,null,null,null,$disk_name,GB20_PO,MY_VDC,false);
/**
* Disk Identifier of Downloaded ISO
*/
$new_disk_id = 0;
/**
* Wait for the Fetch Disk Job to Finish / Fail
*/
while(true) {
echo("Waiting for the job to finish n");
$job = $client->GetJob($job_id);
if($job->status == 1) {// Success
echo("Disk is successfully fetched n");
break;
} else if($job->status == 3) { //Failed
echo("Disk Fetching Failed n");
exit(1);
}
sleep(2);
}
/**
* Create blank Virtual Server
*/
$server = $client->CreateServer(MY_VDC,MY_VLAN,$server_name,
BLANK_DISK_IMAGE,GB1_CPU1_PO,array(GB20_PO));
/**
* If Virtual Server failed to be created
*/
if(!isset($server) && is_null($server)) {
echo("Server creation failed n");
exit(1);
}
/**
* List Disks for Virtual Data Centre
*/
$disks=$client->ListDisks(MY_VDC);
/**
* Find New Disk Identifier
*/
foreach($disks as $disk) {
if($disk->disk_name==$disk_name) {
$new_disk_id = $disk->disk_id;
break;
}
}
/**
* Attach new Disk to server and upon success boot
*/
echo("Attaching the disk to the server n");
if($client->AttachDisk($server->server_id, $new_disk_id) == 1) {
echo("Disk Attached Success n");
$client->StartServer($server->server_id);
echo("Echo server start is issuedn");
}
