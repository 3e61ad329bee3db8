{{/*
A Deployment of the scheduler image; beat and the scheduler-worker differ by role and block.
Call with (dict "ctx" $ "role" "beat" "component" "scheduler" "block" .Values).
Beat only sends the jobs (Redis, database); the scheduler-worker runs them: it also talks to the
orchestrator and the registry, and serves the jobs' metrics.
*/}}
{{- define "scheduler.deployment" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $block := .block -}}
{{- $worker := eq .role "worker" -}}
{{- $name := include "substra.componentName" (dict "ctx" $ctx "component" .component) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  replicas: {{ $block.replicaCount }}
  {{- if not $worker }}
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
        {{- if $worker }}
        {{- include "substra.roleLabels" (list "role-redis-client" "role-database-client" "role-orchestrator-client" "role-registry-client") | nindent 8 }}
        {{- else }}
        {{- include "substra.roleLabels" (list "role-redis-client" "role-database-client") | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "substra.podAnnotations" (dict "ctx" $ctx "block" $block) | nindent 8 }}
        {{- if $worker }}
        {{- include "substra.metricsAnnotations" (dict "ctx" $ctx "port" 8001) | nindent 8 }}
        {{- end }}
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
            {{- include "scheduler.jobsEnv" $v.jobs | nindent 12 }}
            {{- if $worker }}
            - name: CELERY_WORKER_CONCURRENCY
              value: {{ $block.concurrency | quote }}
            # The jobs' metrics; METRICS_HOST (0.0.0.0) comes from the settings ConfigMap.
            - name: METRICS_PORT
              value: "8001"
            {{- with include "substra.registryAuthEnv" $ctx }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- else }}
            - name: CELERYBEAT_SCHEDULE_FILE
              value: /var/substra/runtime-db/celerybeat-schedule
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- if $worker }}
          ports:
            - name: metrics
              containerPort: 8001
              protocol: TCP
          {{- end }}
          {{- with $block.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "substra.containerSecurityContext" $ctx | nindent 10 }}
          volumeMounts:
            {{- if not $worker }}
            - name: runtime-db
              mountPath: /var/substra/runtime-db
            {{- end }}
            - name: tmp
              mountPath: /tmp
            {{- if $worker }}
            {{- include "substra.orchestratorTls.volumeMounts" (dict "ctx" $ctx "indent" 12) }}
            {{- end }}
      volumes:
        {{- if not $worker }}
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
        {{- if $worker }}
        {{- include "substra.orchestratorTls.volumes" (dict "ctx" $ctx "indent" 8) }}
        {{- end }}
{{- end -}}

{{/*
Periods and limits of the jobs (values `jobs`), the same for beat (the schedule) and the
scheduler-worker (the limits). Call with .Values.jobs.
*/}}
{{- define "scheduler.jobsEnv" -}}
{{- with .periods -}}
- name: SCHEDULER_FLUSH_EXPIRED_TOKENS_PERIOD
  value: {{ include "substra.envNumber" .flushExpiredTokens }}
- name: SCHEDULER_REGISTRY_GC_PERIOD
  value: {{ include "substra.envNumber" .registryGc }}
- name: SCHEDULER_REDISPATCH_STALE_TASKS_PERIOD
  value: {{ include "substra.envNumber" .redispatchStaleTasks }}
- name: SCHEDULER_DISPATCH_FORGOTTEN_TASKS_PERIOD
  value: {{ include "substra.envNumber" .dispatchForgottenTasks }}
- name: SCHEDULER_TEAR_DOWN_FINISHED_PLANS_PERIOD
  value: {{ include "substra.envNumber" .tearDownFinishedPlans }}
- name: SCHEDULER_PURGE_PUBLISHED_DISPATCHES_PERIOD
  value: {{ include "substra.envNumber" .purgePublishedDispatches }}
- name: SCHEDULER_EVICT_ASSET_BUFFER_PERIOD
  value: {{ include "substra.envNumber" .evictAssetBuffer }}
- name: SCHEDULER_CLEAN_TASK_DIRECTORIES_PERIOD
  value: {{ include "substra.envNumber" .cleanTaskDirectories }}
- name: SCHEDULER_COLLECT_FUNCTION_ENVIRONMENTS_PERIOD
  value: {{ include "substra.envNumber" .collectFunctionEnvironments }}
{{- end }}
- name: EXECUTING_TASK_STALE_AFTER
  value: {{ include "substra.envNumber" .executingTaskStaleAfter }}
- name: EXECUTING_TASK_MAX_REDISPATCHES
  value: {{ include "substra.envNumber" .executingTaskMaxRedispatches }}
- name: UNDISPATCHED_TASK_GRACE
  value: {{ include "substra.envNumber" .undispatchedTaskGrace }}
- name: PLAN_TEARDOWN_GRACE
  value: {{ include "substra.envNumber" .planTeardownGrace }}
- name: REGISTRY_GC_GRACE
  value: {{ include "substra.envNumber" .registryGcGrace }}
- name: DISPATCH_RETENTION
  value: {{ include "substra.envNumber" .dispatchRetention }}
{{- end -}}
