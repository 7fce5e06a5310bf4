<?php
// Publish to a user through fanout's HTTP API, with PHP's curl extension
// (docs/protocol.md, POST /api/publish). Every tab and device of the user
// gets it; a user who is offline gets it from history when they come back
// within the history TTL.
//
// Usage: php publish.php UID [TEXT]
// FANOUT_URL (http://127.0.0.1:8080), FANOUT_API_KEY (required).

$uid = $argv[1] ?? exit("usage: php publish.php UID [TEXT]\n");
$text = $argv[2] ?? 'hello from PHP';
$url = rtrim(getenv('FANOUT_URL') ?: 'http://127.0.0.1:8080', '/');
$key = getenv('FANOUT_API_KEY') ?: exit("set FANOUT_API_KEY\n");

$body = json_encode([
    'to' => ['users' => [$uid]],
    'event' => 'notice',
    'data' => ['text' => $text],
    // A retry with the same key (after a timeout or a 503) delivers once.
    'idempotency_key' => 'php-' . bin2hex(random_bytes(8)),
]);
$ch = curl_init("$url/api/publish");
curl_setopt_array($ch, [
    CURLOPT_POST => true,
    CURLOPT_POSTFIELDS => $body,
    CURLOPT_HTTPHEADER => ["Authorization: Bearer $key", 'Content-Type: application/json'],
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_TIMEOUT => 10,
]);
$reply = curl_exec($ch);
$status = curl_getinfo($ch, CURLINFO_HTTP_CODE);
curl_close($ch);
if ($reply === false || $status !== 200) {
    fwrite(STDERR, "publish failed ($status): $reply\n");
    exit(1);
}
$r = json_decode($reply, true);
$online = in_array($uid, $r['offline_users'], true) ? 'offline' : 'online';
echo "id {$r['id']} offset {$r['positions']["user:$uid"]['offset']} $online\n";
