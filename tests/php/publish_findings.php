<?php
// PublishImage from PHP's SoapClient on two API versions: version 2 answers with two parts, the
// result and the image's hygiene report (SoapClient gives them as an array by part name);
// version 1 with the result alone, as it was released.
//
// Environment: WSDL_V1, WSDL_V2, USER/PASS (the image's owner), PUBLISH_TO (a uuid), IMAGES
// (image ids, separated by commas). Prints one line "RESULT <json>": for each version, what
// each call answered, by "image<id>".

function client($wsdl) {
    return new SoapClient($wsdl, array(
        "login" => getenv("USER"), "password" => getenv("PASS"),
        "exceptions" => 1, "cache_wsdl" => WSDL_CACHE_NONE));
}

$v1 = client(getenv("WSDL_V1"));
$v2 = client(getenv("WSDL_V2"));
$to = getenv("PUBLISH_TO");
$answers = array("v1" => array(), "v2" => array());
foreach (explode(",", getenv("IMAGES")) as $id) {
    $id = (int)$id;
    $answers["v1"]["image$id"] = $v1->PublishImage($id, $to);
    $answers["v2"]["image$id"] = $v2->PublishImage($id, $to, null);
}
echo "RESULT " . json_encode($answers) . "\n";
