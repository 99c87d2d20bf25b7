<?php
// The seed's main story over SOAP, as a PHP customer would write it: a server from an image,
// configured and stopped; CreateImage; a server from the new image; publishing it to another
// customer, who uses it but cannot delete it; revoking; a third customer who never sees it;
// snapshot, clone and revert. The data a guest would write is put straight into the volume
// files (VOLUMES_DIR); the Rust side checks what the disks read afterwards.
//
// Environment: WSDL, ALICE_USER/ALICE_PASS (the owner), CAROL_USER/CAROL_PASS (another billing
// entity), CAROL_ENTITY (its uuid, as the CLI printed it), BOB_USER/BOB_PASS (never published
// to), VOLUMES_DIR. Prints one line "RESULT <json>" with the ids the Rust side checks.

function client($who) {
    return new SoapClient(getenv("WSDL"), array(
        "login" => getenv("{$who}_USER"), "password" => getenv("{$who}_PASS"),
        "trace" => 1, "exceptions" => 1, "cache_wsdl" => WSDL_CACHE_NONE));
}
function fail($message) { fwrite(STDERR, "FAIL: $message\n"); exit(1); }
function check($condition, $message) { if (!$condition) fail($message); }

function wait_job($client, $job_id) {
    $job = $client->WaitForJob($job_id, 120);
    check($job->status == 1, "job $job_id did not succeed: " . json_encode($job));
    return $job;
}

// The errorCode of the fault's ExtilityException detail (PHP hands the typed detail over as
// a SoapVar).
function error_code(SoapFault $fault) {
    $detail = isset($fault->detail->ExtilityException) ? $fault->detail->ExtilityException : null;
    if ($detail instanceof SoapVar) { $detail = $detail->enc_value; }
    return isset($detail->errorCode) ? $detail->errorCode
        : "(no errorCode: " . $fault->getMessage() . ")";
}

function expect_fault($code, $call, $what) {
    try {
        $call();
    } catch (SoapFault $fault) {
        check(error_code($fault) == $code, "$what: expected $code, got " . error_code($fault));
        return;
    }
    fail("$what: expected a $code fault, it succeeded");
}

function volume_files() { return glob(getenv("VOLUMES_DIR") . "/*"); }

// The one volume file an operation made.
function new_volume($before) {
    $new = array_values(array_diff(volume_files(), $before));
    check(count($new) == 1, "expected one new volume file, got " . json_encode($new));
    return $new[0];
}

function image_ids($client) {
    $ids = array();
    foreach ($client->ListImages() as $image) { $ids[] = $image->image_id; }
    return $ids;
}

function find_image($client, $image_id) {
    foreach ($client->ListImages() as $image) {
        if ($image->image_id == $image_id) { return $image; }
    }
    return null;
}

$alice = client("ALICE");
$carol = client("CAROL");
$bob = client("BOB");
$BLANK_IMAGE = 66; $SERVER_OFFER = 18; $DISK_20GB = 31; $GIB = 1 << 30;

$me = $alice->GetCustomer();
$carol_me = $carol->GetCustomer();
check($carol_me->billing_entity_uuid == getenv("CAROL_ENTITY"), "carol's billing entity");
check($carol_me->billing_entity_uuid != $me->billing_entity_uuid, "another billing entity");
$vdcs = $alice->ListVDCs();
$vdc = $vdcs[0]->vdc_id;

// 1. A server from an operating system image (here the blank one), configured.
$before = volume_files();
$test = $alice->CreateServer($vdc, -1, "php test", $BLANK_IMAGE, $SERVER_OFFER, array($DISK_20GB));
$boot = $test->disks[0]->disk_id;
$boot_file = new_volume($before);
$f = fopen($boot_file, "r+b");
fwrite($f, "PHP BOOT SECTOR");
fseek($f, 5 * $GIB);
fwrite($f, str_repeat("\xab", 65536));
fclose($f);
wait_job($alice, $alice->StartServer($test->server_id));
expect_fault("CONFLICT", function () use ($alice, $boot) {
    $alice->CreateImage($boot, "too early", "admin", true);
}, "CreateImage while the server runs");

// 2. Stop it and make the image.
wait_job($alice, $alice->StopServer($test->server_id, 1));
$job = wait_job($alice, $alice->CreateImage($boot, "php golden", "admin", true));
check($job->item_type == "image", "the job's item is the image: " . json_encode($job));
$image_id = $job->item_id;
$image = find_image($alice, $image_id);
check($image !== null && $image->visibility == "private", "alice lists her private image");
check($image->owner == $me->customer_uuid, "alice owns it");

// 3. A new server from the image.
$from_image = $alice->CreateServer($vdc, -1, "php from image", $image_id, $SERVER_OFFER,
    array($DISK_20GB));
check($from_image->initial_user == "admin", "the image's default user");
$from_image_boot = $from_image->disks[0]->disk_id;

// 4. Publish it to carol (another billing entity): she lists and uses it.
check(!in_array($image_id, image_ids($carol)), "carol sees nothing before publishing");
check($alice->PublishImage($image_id, $carol_me->customer_uuid) == 1, "PublishImage returns 1");
$seen = find_image($carol, $image_id);
check($seen !== null, "carol lists the published image");
check($seen->owner == $me->customer_uuid, "carol sees who published it");
$shares = $alice->ListImageShares($image_id);
check(count($shares) == 1 && $shares[0]->kind == "customer" && $shares[0]->uuid == $carol_me->customer_uuid,
      "ListImageShares shows carol");
$carol_vdcs = $carol->ListVDCs();
$carol_server = $carol->CreateServer($carol_vdcs[0]->vdc_id, -1, "carol's", $image_id,
    $SERVER_OFFER, array($DISK_20GB));
$carol_boot = $carol_server->disks[0]->disk_id;

// 5. She cannot delete, rename or republish it.
expect_fault("PERMISSION_DENIED", function () use ($carol, $image_id) {
    $carol->DeleteImage($image_id);
}, "carol deletes alice's image");
expect_fault("PERMISSION_DENIED", function () use ($carol, $image_id) {
    $carol->RenameImage($image_id, "mine now");
}, "carol renames alice's image");
expect_fault("PERMISSION_DENIED", function () use ($carol, $image_id) {
    $carol->PublishImage($image_id, "platform");
}, "carol republishes alice's image");

// 6. Revoke: no new use, her server stays.
check($alice->RevokeImage($image_id, $carol_me->customer_uuid) == 1, "RevokeImage returns 1");
check(!in_array($image_id, image_ids($carol)), "carol no longer lists it");
expect_fault("NOT_FOUND", function () use ($carol, $carol_vdcs, $image_id, $SERVER_OFFER, $DISK_20GB) {
    $carol->CreateServer($carol_vdcs[0]->vdc_id, -1, "again", $image_id, $SERVER_OFFER,
        array($DISK_20GB));
}, "a server from a revoked image");
$still = $carol->GetServer($carol_server->server_id);
check($still->disks[0]->disk_id == $carol_boot, "carol's server keeps its disk");

// 7. Bob never saw it.
check(!in_array($image_id, image_ids($bob)), "bob never lists it");

// 8. Snapshot; the guest writes on; clone the snapshot; revert the disk to it.
$before = volume_files();
$snapshot = $alice->CreateDiskSnapshot($from_image_boot, "clean");
check($snapshot->disk_id == $from_image_boot, "the snapshot refers to its disk");
$overlay = new_volume($before); // the disk goes on in a new overlay on the frozen volume
exec("qemu-io -f qcow2 -c " . escapeshellarg("write -P 0xee 0 4096") . " "
    . escapeshellarg($overlay) . " 2>&1", $out, $rc);
check($rc == 0, "qemu-io: " . implode("\n", $out));
$snapshots = $alice->ListSnapshots($from_image_boot);
check(count($snapshots) == 1 && $snapshots[0]->snapshot_id == $snapshot->snapshot_id,
    "ListSnapshots: " . json_encode($snapshots));
$clone = $alice->CloneDisk($snapshot->snapshot_id, "php clone", $vdc);
check($clone->disk_id != $from_image_boot, "a clone is a new disk");
$reverted = $alice->RevertDisk($snapshot->snapshot_id);
check($reverted->disk_id == $from_image_boot, "RevertDisk returns the disk");
check(!file_exists($overlay), "reverting discards what was written since the snapshot");

$usage = $alice->ListUsage(null, null);
check(is_array($usage) || $usage === null, "ListUsage answers a list");

echo "RESULT " . json_encode(array(
    "image_id" => $image_id,
    "from_image_boot" => $from_image_boot,
    "carol_boot" => $carol_boot,
    "clone" => $clone->disk_id,
    "snapshot" => $snapshot->snapshot_id,
)) . "\n";
