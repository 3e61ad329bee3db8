{{/*
Shared helpers of the umbrella chart.

Named templates are global to a chart and its subcharts, so the subcharts under charts/ call these
instead of carrying copies. A subchart only sees its own values and `.Values.global`, therefore
every helper here reads shared settings from `.Values.global` and takes the caller's context
explicitly: `ctx` is the root context (`$`) of whichever chart renders, `block` a component's
values block (`.Values` of a subchart, or a nested block such as `.Values.builder`).
*/}}

{{/* Base of every resource name: the release name, unless global.fullnameOverride. */}}
{{- define "substra.fullname" -}}
{{- default .Release.Name .Values.global.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <fullname>-<component>. Call with (dict "ctx" $ "component" "server"). */}}
{{- define "substra.componentName" -}}
{{- printf "%s-%s" (include "substra.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The version every tag defaults to: the umbrella's appVersion (subcharts carry the same). */}}
{{- define "substra.appVersion" -}}
{{- .Chart.AppVersion | default "latest" -}}
{{- end -}}

{{/* Standard labels. Call with (dict "ctx" $ "component" "server"). */}}
{{- define "substra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "substra.selectorLabels" . }}
app.kubernetes.io/version: {{ include "substra.appVersion" .ctx | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: substra-backend
{{- end -}}

{{/* Labels that select one component's pods (stable across upgrades: never add the version). */}}
{{- define "substra.selectorLabels" -}}
app.kubernetes.io/name: substra-backend
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/*
Network roles of a pod (reference section 6.5): each role is a label the NetworkPolicies of the
umbrella select on. Call with a list: (list "role-database-client" "role-redis-client").
*/}}
{{- define "substra.roleLabels" -}}
{{- range $index, $role := . }}
{{- if $index }}{{ "\n" }}{{ end }}{{ $role }}: "true"
{{- end }}
{{- end -}}

{{/*
Image reference. Call with (dict "ctx" $ "image" .Values.image). The tag defaults to the chart's
appVersion; global.imageRegistry replaces every registry.
*/}}
{{- define "substra.image" -}}
{{- $registry := default .image.registry .ctx.Values.global.imageRegistry -}}
{{- $tag := default (include "substra.appVersion" .ctx) (toString (default "" .image.tag)) -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The migrations image (init containers of the other services). Call with $. */}}
{{- define "substra.migrationsImage" -}}
{{- include "substra.image" (dict "ctx" . "image" .Values.global.migrationsImage) -}}
{{- end -}}

{{/* imagePullSecrets of a pod: the image's own plus the global ones. Call like substra.image. */}}
{{- define "substra.imagePullSecrets" -}}
{{- $secrets := concat (.image.pullSecrets | default list) (.ctx.Values.global.imagePullSecrets | default list) -}}
{{- if $secrets }}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod securityContext from a block's podSecurityContext {enabled, runAsUser, runAsGroup, fsGroup}. */}}
{{- define "substra.podSecurityContext" -}}
{{- with .podSecurityContext }}
{{- if .enabled }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .runAsUser }}
  runAsGroup: {{ .runAsGroup }}
  fsGroup: {{ .fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- end }}
{{- end }}
{{- end -}}

{{/* Container hardening: none of the services needs privileges or capabilities. */}}
{{- define "substra.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* nodeSelector / tolerations / affinity of a block. */}}
{{- define "substra.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Pod annotations. The shared settings ConfigMap and Secrets are built from `global`, so a checksum
of it rolls every pod when they change. Call with (dict "ctx" $ "block" .Values).
*/}}
{{- define "substra.podAnnotations" -}}
checksum/global: {{ toJson .ctx.Values.global | sha256sum }}
{{- with .block.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
storageClassName of a PVC spec, on a new line indented by `indent`: "" leaves the cluster
default (no field), "-" asks for no class. Call with (dict "class" .storageClass "indent" 2).
*/}}
{{- define "substra.storageClass" -}}
{{- with .class }}
{{- printf "storageClassName: %s" (ternary "\"\"" (quote .) (eq "-" .)) | nindent $.indent }}
{{- end }}
{{- end -}}

{{/* ---- Names of the shared objects built by the umbrella ---- */}}

{{- define "substra.settingsConfigMapName" -}}
{{- include "substra.componentName" (dict "ctx" . "component" "settings") -}}
{{- end -}}

{{- define "substra.secretKeySecretName" -}}
{{- default (include "substra.componentName" (dict "ctx" . "component" "server-key")) .Values.global.secretKey.existingSecret -}}
{{- end -}}

{{- define "substra.databaseSecretName" -}}
{{- default (include "substra.componentName" (dict "ctx" . "component" "database")) .Values.global.database.auth.credentialsSecretName -}}
{{- end -}}

{{- define "substra.redisSecretName" -}}
{{- default (include "substra.componentName" (dict "ctx" . "component" "redis")) .Values.global.redis.auth.existingSecret -}}
{{- end -}}

{{- define "substra.redisSecretKey" -}}
{{- if .Values.global.redis.auth.existingSecret -}}
{{- .Values.global.redis.auth.existingSecretPasswordKey -}}
{{- else -}}
CELERY_BROKER_PASSWORD
{{- end -}}
{{- end -}}

{{- define "substra.objectStoreSecretName" -}}
{{- default (include "substra.componentName" (dict "ctx" . "component" "objectstore")) .Values.global.objectStore.existingSecret -}}
{{- end -}}

{{- define "substra.accountsSecretName" -}}
{{- default (include "substra.componentName" (dict "ctx" . "component" "add-account")) .Values.global.addAccountOperator.existingSecret -}}
{{- end -}}

{{- define "substra.registrySecretName" -}}
{{- default (include "substra.componentName" (dict "ctx" . "component" "registry")) .Values.global.containerRegistry.auth.existingSecret -}}
{{- end -}}

{{/* StatefulSet of the workers: events routes plans by its replica count (WORKER_REPLICA_SET_NAME). */}}
{{- define "substra.workerName" -}}
{{- include "substra.componentName" (dict "ctx" . "component" "worker") -}}
{{- end -}}

{{/* ---- Environment of every backend container ---- */}}

{{/* The shared, non-secret settings. Call with $. */}}
{{- define "substra.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "substra.settingsConfigMapName" . }}
{{- end -}}

{{/*
Secret-backed and per-pod variables. Call with (dict "ctx" $ "secretKey" true): SECRET_KEY only
goes to the processes that sign tokens (server, migrations).
*/}}
{{- define "substra.env" -}}
{{- include "substra.env.items" . | trim -}}
{{- end -}}

{{- define "substra.env.items" -}}
{{- $ctx := .ctx -}}
{{- $g := $ctx.Values.global -}}
{{- if .secretKey }}
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.secretKeySecretName" $ctx }}
      key: {{ if $g.secretKey.existingSecret }}{{ $g.secretKey.existingSecretKey }}{{ else }}SECRET_KEY{{ end }}
{{- end }}
- name: DATABASE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.databaseSecretName" $ctx }}
      key: DATABASE_USERNAME
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.databaseSecretName" $ctx }}
      key: DATABASE_PASSWORD
{{- if $g.redis.auth.enabled }}
- name: CELERY_BROKER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.redisSecretName" $ctx }}
      key: {{ include "substra.redisSecretKey" $ctx }}
{{- end }}
- name: OBJECTSTORE_ACCESSKEY
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.objectStoreSecretName" $ctx }}
      key: OBJECTSTORE_ACCESSKEY
- name: OBJECTSTORE_SECRETKEY
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.objectStoreSecretName" $ctx }}
      key: OBJECTSTORE_SECRETKEY
# The pod name: a StatefulSet ordinal is its suffix (the worker's replica index).
- name: HOSTNAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end -}}

{{/*
Credentials of the registry API (REGISTRY_USERNAME, REGISTRY_PASSWORD) for its clients (the
scheduler-worker's garbage collection, registry-prepopulate): env items, or nothing without
global.containerRegistry.auth. Call with $.
*/}}
{{- define "substra.registryAuthEnv" -}}
{{- include "substra.registryAuthEnv.items" . | trim -}}
{{- end -}}

{{- define "substra.registryAuthEnv.items" -}}
{{- if .Values.global.containerRegistry.auth.enabled }}
- name: REGISTRY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.registrySecretName" . }}
      key: REGISTRY_USERNAME
- name: REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "substra.registrySecretName" . }}
      key: REGISTRY_PASSWORD
{{- end }}
{{- end -}}

{{/*
A number as an env value, quoted. Numbers of a values file reach templates as float64, which
print as 1.2096e+06 from a million on: whole ones are printed as integers. Call with the number.
*/}}
{{- define "substra.envNumber" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . | quote -}}
{{- else -}}
{{- . | quote -}}
{{- end -}}
{{- end -}}

{{/* ---- Orchestrator TLS material (mounted where the settings ConfigMap points) ---- */}}

{{- define "substra.orchestratorTlsDir" -}}/var/substra/orchestrator/tls{{- end -}}

{{/*
volumeMounts / volumes items, indented by `indent` on new lines, or nothing at all.
Call with (dict "ctx" $ "indent" 12).
*/}}
{{- define "substra.orchestratorTls.volumeMounts" -}}
{{- with include "substra.orchestratorTls.volumeMounts.items" .ctx | trim }}{{ . | nindent $.indent }}{{ end -}}
{{- end -}}

{{- define "substra.orchestratorTls.volumes" -}}
{{- with include "substra.orchestratorTls.volumes.items" .ctx | trim }}{{ . | nindent $.indent }}{{ end -}}
{{- end -}}

{{- define "substra.orchestratorTls.volumeMounts.items" -}}
{{- $tls := .Values.global.orchestrator.tls -}}
{{- if $tls.enabled }}
{{- if $tls.cacert }}
- name: orchestrator-tls-cacert
  mountPath: {{ include "substra.orchestratorTlsDir" . }}/server
  readOnly: true
{{- end }}
{{- if $tls.mtls.enabled }}
- name: orchestrator-tls-client
  mountPath: {{ include "substra.orchestratorTlsDir" . }}/client
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "substra.orchestratorTls.volumes.items" -}}
{{- $tls := .Values.global.orchestrator.tls -}}
{{- if $tls.enabled }}
{{- if $tls.cacert }}
- name: orchestrator-tls-cacert
  secret:
    secretName: {{ $tls.cacert }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if $tls.mtls.enabled }}
- name: orchestrator-tls-client
  secret:
    secretName: {{ required "global.orchestrator.tls.mtls.clientCertificate (a Secret with tls.crt and tls.key) is required with mtls" $tls.mtls.clientCertificate }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/*
Init container that waits until the database schema is at head: the migrations run in a
post-install hook (and in the server's init-migrate), after the pods are created.
Call with (dict "ctx" $ "block" .Values).
*/}}
{{- define "substra.waitMigrations" -}}
{{- include "substra.waitMigrations.item" . | trim -}}
{{- end -}}

{{- define "substra.waitMigrations.item" -}}
{{- $ctx := .ctx -}}
{{- if $ctx.Values.global.waitForMigrations.enabled }}
- name: wait-migrations
  image: {{ include "substra.migrationsImage" $ctx }}
  imagePullPolicy: {{ $ctx.Values.global.migrationsImage.pullPolicy }}
  command: ["sh", "-c", "until backend-migrations check; do echo 'waiting for the database schema'; sleep 5; done"]
  {{- include "substra.envFrom" $ctx | nindent 2 }}
  env:
    {{- include "substra.env" (dict "ctx" $ctx) | nindent 4 }}
  {{- include "substra.containerSecurityContext" $ctx | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations, when metrics are on. Call with (dict "ctx" $ "port" 8001 "path" "/metrics"). */}}
{{- define "substra.metricsAnnotations" -}}
{{- if .ctx.Values.global.metrics.enabled -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: {{ .path | default "/metrics" | quote }}
{{- end }}
{{- end -}}

{{/* ServiceAccount name of a block with serviceAccount {create, name}. Call with (dict "ctx" $ "block" .Values "component" "worker"). */}}
{{- define "substra.serviceAccountName" -}}
{{- $sa := .block.serviceAccount | default dict -}}
{{- if $sa.create -}}
{{- default (include "substra.componentName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/*
The pod-level fields every pod sets the same way: serviceAccountName (when given), imagePullSecrets,
securityContext and scheduling. Call with (dict "ctx" $ "image" .Values.image "security" .Values
"scheduling" .Values "serviceAccountName" "name"); security and scheduling are values blocks.
*/}}
{{- define "substra.podCommon" -}}
{{- $out := "" -}}
{{- with .serviceAccountName }}
{{- $out = printf "serviceAccountName: %s" . }}
{{- end }}
{{- $out = print $out (include "substra.imagePullSecrets" .) (include "substra.podSecurityContext" .security) (include "substra.scheduling" .scheduling) -}}
{{- trim $out -}}
{{- end -}}
