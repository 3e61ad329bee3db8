{{/*
A Deployment of the scheduler image; beat and the scheduler-worker differ by role and block.
Call with (dict "ctx" $ "role" "beat" "component" "scheduler" "block" .Values).
*/}}
{{- define "scheduler.deployment" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $block := .block -}}
{{- $name := include "substra.componentName" (dict "ctx" $ctx "component" .component) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  replicas: {{ $block.replicaCount }}
  {{- if eq .role "beat" }}
  # Never two beats at once, even during an upgrade.
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "substra.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "substra.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- if eq .role "beat" }}
        {{- include "substra.roleLabels" (list "role-redis-client" "role-database-client") | nindent 8 }}
        {{- else }}
        {{- include "substra.roleLabels" (list "role-redis-client" "role-database-client" "role-api-k8s-client") | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "substra.podAnnotations" (dict "ctx" $ctx "block" $block) | nindent 8 }}
    spec:
      {{- include "substra.podCommon" (dict "ctx" $ctx "image" $v.image "security" $v "scheduling" $block "serviceAccountName" (include "substra.serviceAccountName" (dict "ctx" $ctx "block" $v "component" "scheduler"))) | nindent 6 }}
      {{- with include "substra.waitMigrations" (dict "ctx" $ctx "block" $block) }}
      initContainers:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "substra.image" (dict "ctx" $ctx "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: ["backend-scheduler", {{ .role | quote }}]
          {{- include "substra.envFrom" $ctx | nindent 10 }}
          env:
            {{- include "substra.env" (dict "ctx" $ctx) | nindent 12 }}
            {{- if eq .role "beat" }}
            - name: CELERYBEAT_SCHEDULE_FILE
              value: /var/substra/runtime-db/celerybeat-schedule
            {{- else }}
            - name: CELERY_WORKER_CONCURRENCY
              value: {{ $block.concurrency | quote }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $block.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "substra.containerSecurityContext" $ctx | nindent 10 }}
          volumeMounts:
            {{- if eq .role "beat" }}
            - name: runtime-db
              mountPath: /var/substra/runtime-db
            {{- end }}
            - name: tmp
              mountPath: /tmp
      volumes:
        {{- if eq .role "beat" }}
        - name: runtime-db
          {{- if $v.persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ $name }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        {{- end }}
        - name: tmp
          emptyDir: {}
{{- end -}}
