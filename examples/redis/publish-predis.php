<?php
// Publish to a user straight through Redis, kept in history, with predis
// (composer require predis/predis, or apt install php-nrk-predis): FCALL
// fanout_publish appends the message to the channel's history and
// publishes it in one step (docs/redis.md).
//
// Usage: php publish-predis.php UID [TEXT]
// REDIS_HOST / REDIS_PORT (127.0.0.1:6379), FANOUT_PREFIX (fanout).
if (file_exists(__DIR__ . '/vendor/autoload.php')) {
    require __DIR__ . '/vendor/autoload.php';        // composer
} else {
    require 'Predis/Autoloader.php';                 // Debian's php-nrk-predis
    Predis\Autoloader::register();
}
$uid = $argv[1];
$text = $argv[2] ?? 'hello from predis';
$prefix = getenv('FANOUT_PREFIX') ?: 'fanout';

$redis = new Predis\Client([
    'host' => getenv('REDIS_HOST') ?: '127.0.0.1',
    'port' => (int) (getenv('REDIS_PORT') ?: 6379),
]);

$channel = "$prefix:user:$uid";
$body = json_encode(['event' => 'notice', 'data' => ['text' => $text]]);
[$offset, $epoch, $receivers] = $redis->executeRaw(
    ['FCALL', 'fanout_publish', '2', "{{$channel}}:h", "{{$channel}}:m", $channel, $body]
);
echo "offset $offset epoch $epoch nodes $receivers\n";
