<?php
// Publish to a user straight through Redis, kept in history, with phpredis
// (apt install php-redis, or pecl install redis): FCALL fanout_publish
// appends the message to the channel's history and publishes it in one
// step (docs/redis.md).
//
// Usage: php publish-phpredis.php UID [TEXT]
// REDIS_HOST / REDIS_PORT (127.0.0.1:6379), FANOUT_PREFIX (fanout).
$uid = $argv[1];
$text = $argv[2] ?? 'hello from phpredis';
$prefix = getenv('FANOUT_PREFIX') ?: 'fanout';

$redis = new Redis();
$redis->connect(getenv('REDIS_HOST') ?: '127.0.0.1', (int) (getenv('REDIS_PORT') ?: 6379));

$channel = "$prefix:user:$uid";
$body = json_encode(['event' => 'notice', 'data' => ['text' => $text]]);
[$offset, $epoch, $receivers] = $redis->rawCommand(
    'FCALL', 'fanout_publish', 2, "{{$channel}}:h", "{{$channel}}:m", $channel, $body
);
echo "offset $offset epoch $epoch nodes $receivers\n";
