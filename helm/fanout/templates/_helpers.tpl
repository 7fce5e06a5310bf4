{{/* Chart name, truncated to 63 characters (DNS-1123 label limit). */}}
{{- define "fanout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Truncated to 53 characters so that every
derived name ("-internal", "-dev-redis") stays within the 63 characters of a
Service name.
*/}}
{{- define "fanout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fanout.internalName" -}}
{{- printf "%s-internal" (include "fanout.fullname" .) }}
{{- end }}

{{- define "fanout.devRedisName" -}}
{{- printf "%s-dev-redis" (include "fanout.fullname" .) }}
{{- end }}

{{- define "fanout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image tag: image.tag, or the chart's appVersion. */}}
{{- define "fanout.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "fanout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "fanout.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Labels shared by every object's metadata. */}}
{{- define "fanout.commonLabels" -}}
helm.sh/chart: {{ include "fanout.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "fanout.imageTag" . | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fanout
{{- end }}

{{/* Selector labels of the fanout pods. */}}
{{- define "fanout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "fanout.labels" -}}
{{ include "fanout.commonLabels" . }}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* Selector labels of the dev Redis pod. */}}
{{- define "fanout.devRedisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}-dev-redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dev-redis
{{- end }}

{{- define "fanout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fanout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fanout.secretName" -}}
{{- .Values.secret.existingSecret | default (include "fanout.fullname" .) }}
{{- end }}

{{/* Seconds of the preStop wait (0 when there is no hook). */}}
{{- define "fanout.preStopSeconds" -}}
{{- if eq .Values.preStop.mode "none" }}0{{ else }}{{ .Values.preStop.seconds | int }}{{ end }}
{{- end }}

{{/*
Pod terminationGracePeriodSeconds: the explicit value, or preStop + drain
window + shutdown grace + 5 s margin (STYLE.md section 5).
*/}}
{{- define "fanout.terminationGracePeriodSeconds" -}}
{{- $need := add (include "fanout.preStopSeconds" . | int) (.Values.shutdown.drainWindowSeconds | int) (.Values.shutdown.graceSeconds | int) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $need 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* Whether the Redis password from the Secret is put into the URL. */}}
{{- define "fanout.redisUsePassword" -}}
{{- if .Values.redis.usePassword }}true{{ end }}
{{- end }}

{{/* True when the pods share some Redis. */}}
{{- define "fanout.hasRedis" -}}
{{- if or .Values.devRedis.enabled .Values.redis.url .Values.redis.urlFromSecret .Values.redis.sentinel.addresses }}true{{ end }}
{{- end }}

{{/*
The FANOUT_REDIS_URL value when it can be written in the ConfigMap (no
credentials from the Secret); empty otherwise.
*/}}
{{- define "fanout.redisPlainUrl" -}}
{{- if .Values.devRedis.enabled }}
{{- printf "redis://%s:6379" (include "fanout.devRedisName" .) }}
{{- else if and .Values.redis.url (not .Values.redis.usePassword) }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/*
The FANOUT_REDIS_URL value with the password inserted by Kubernetes from the
REDIS_PASSWORD variable ($(VAR) expansion in env values).
*/}}
{{- define "fanout.redisPasswordUrl" -}}
{{- $url := .Values.redis.url }}
{{- if not $url }}
{{- $url = printf "redis://%s" (first .Values.redis.sentinel.addresses) }}
{{- end }}
{{- $parts := splitn "://" 2 $url }}
{{- printf "%s://%s:$(REDIS_PASSWORD)@%s" $parts._0 .Values.redis.username $parts._1 }}
{{- end }}

{{/* Every total failure of the values that the schema cannot express. */}}
{{- define "fanout.validate" -}}
{{- $r := .Values.redis }}
{{- $s := .Values.secret }}
{{- if and (not (include "fanout.hasRedis" .)) (not .Values.autoscaling.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount > 1 needs a shared Redis (redis.url, redis.urlFromSecret, redis.sentinel.addresses or devRedis.enabled): without one each pod would reach only its own clients" }}
{{- end }}
{{- if .Values.devRedis.enabled }}
{{- if or $r.url $r.urlFromSecret $r.cluster $r.sentinel.addresses $r.usePassword }}
{{- fail "devRedis.enabled runs its own Redis: leave redis.url, redis.urlFromSecret, redis.usePassword, redis.cluster and redis.sentinel.addresses unset" }}
{{- end }}
{{- end }}
{{- if and $r.url $r.urlFromSecret }}
{{- fail "give the Redis URL either in redis.url or in the Secret (redis.urlFromSecret), not both" }}
{{- end }}
{{- if and $r.cluster $r.sentinel.addresses }}
{{- fail "redis.cluster and redis.sentinel.addresses exclude each other" }}
{{- end }}
{{- if and $r.cluster (not (or $r.url $r.urlFromSecret)) }}
{{- fail "redis.cluster needs redis.url (a seed node, e.g. redis://redis-cluster:6379) or redis.urlFromSecret" }}
{{- end }}
{{- if $r.usePassword }}
{{- if $r.urlFromSecret }}
{{- fail "redis.usePassword and redis.urlFromSecret exclude each other: put the credentials into the URL in the Secret" }}
{{- end }}
{{- if not (or $r.url $r.sentinel.addresses) }}
{{- fail "redis.usePassword needs redis.url (without credentials) or redis.sentinel.addresses" }}
{{- end }}
{{- if contains "@" $r.url }}
{{- fail "redis.url must not contain credentials when redis.usePassword is true: the password comes from the Secret" }}
{{- end }}
{{- end }}
{{- if and $r.usePassword (not $s.existingSecret) (not $s.redisPassword) }}
{{- fail "redis.usePassword needs secret.redisPassword (or a secret.existingSecret holding the key secret.keys.redisPassword)" }}
{{- end }}
{{- if and $r.urlFromSecret (not $s.existingSecret) (not $s.redisUrl) }}
{{- fail "redis.urlFromSecret needs secret.redisUrl (or a secret.existingSecret holding the key secret.keys.redisUrl)" }}
{{- end }}
{{- if and $s.redisPassword (not $r.usePassword) }}
{{- fail "secret.redisPassword is set but redis.usePassword is false" }}
{{- end }}
{{- if and $s.redisUrl (not $r.urlFromSecret) }}
{{- fail "secret.redisUrl is set but redis.urlFromSecret is false" }}
{{- end }}
{{- if and $s.existingSecret (or $s.jwtSecret $s.apiKeys $s.jwtPublicKey $s.redisPassword $s.redisUrl) }}
{{- fail (printf "secret.existingSecret (%s) is set: leave secret.jwtSecret, apiKeys, jwtPublicKey, redisPassword and redisUrl empty and put them into that Secret" $s.existingSecret) }}
{{- end }}
{{- if and (eq .Values.auth.jwtAlgorithm "HS256") $s.jwtPublicKey }}
{{- fail "secret.jwtPublicKey is set but auth.jwtAlgorithm is HS256: set auth.jwtAlgorithm to RS256 or ES256" }}
{{- end }}
{{- if and (ne .Values.auth.jwtAlgorithm "HS256") $s.jwtSecret }}
{{- fail (printf "secret.jwtSecret is set but auth.jwtAlgorithm is %s, which verifies with secret.jwtPublicKey" .Values.auth.jwtAlgorithm) }}
{{- end }}
{{- $need := add (include "fanout.preStopSeconds" . | int) (.Values.shutdown.drainWindowSeconds | int) (.Values.shutdown.graceSeconds | int) }}
{{- if le (include "fanout.terminationGracePeriodSeconds" . | int) $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than preStop.seconds + shutdown.drainWindowSeconds + shutdown.graceSeconds (%d), or pods are killed mid-drain; leave it empty to get %d" (.Values.terminationGracePeriodSeconds | int) $need (add $need 5)) }}
{{- end }}
{{- $a := .Values.autoscaling }}
{{- if $a.enabled }}
{{- if gt ($a.minReplicas | int) ($a.maxReplicas | int) }}
{{- fail (printf "autoscaling.minReplicas (%d) is larger than autoscaling.maxReplicas (%d)" ($a.minReplicas | int) ($a.maxReplicas | int)) }}
{{- end }}
{{- if and (not $a.targetCPUUtilizationPercentage) (not $a.connections.enabled) }}
{{- fail "autoscaling.enabled needs a metric: autoscaling.targetCPUUtilizationPercentage and/or autoscaling.connections.enabled" }}
{{- end }}
{{- if and $a.targetCPUUtilizationPercentage (not (and .Values.resources.requests .Values.resources.requests.cpu)) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage needs resources.requests.cpu (the target is a percentage of it)" }}
{{- end }}
{{- end }}
{{- $p := .Values.podDisruptionBudget }}
{{- if $p.enabled }}
{{- if eq (toString $p.maxUnavailable | empty) (toString $p.minAvailable | empty) }}
{{- fail "podDisruptionBudget: give exactly one of maxUnavailable and minAvailable (set the other to \"\")" }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts" }}
{{- end }}
{{- end }}
