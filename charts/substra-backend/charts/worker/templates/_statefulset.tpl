{{/*
One Celery StatefulSet; the worker and the builder differ only by role, values block and a few
variables. Call with (dict "ctx" $ "role" "worker" "block" .Values).
*/}}
{{- define "worker.statefulset" -}}
{{- $ctx := .ctx -}}
{{- $role := .role -}}
{{- $block := .block -}}
{{- $v := $ctx.Values -}}
{{- $name := include "substra.componentName" (dict "ctx" $ctx "component" $role) -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
spec:
  serviceName: {{ $name }}
  replicas: {{ $block.replicaCount }}
  # Replicas are independent (each has its own queue): start and stop them together.
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      {{- include "substra.selectorLabels" (dict "ctx" $ctx "component" $role) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "substra.selectorLabels" (dict "ctx" $ctx "component" $role) | nindent 8 }}
        {{- /* Downloads from peers, pushes/pulls images, drives compute pods through the API. */}}
        {{- include "substra.roleLabels" (list "role-internet-egress" "role-database-client" "role-storage-client" "role-orchestrator-client" "role-redis-client" "role-registry-client" "role-api-k8s-client" "role-server-client") | nindent 8 }}
      annotations:
        {{- include "substra.podAnnotations" (dict "ctx" $ctx "block" $block) | nindent 8 }}
        {{- include "substra.metricsAnnotations" (dict "ctx" $ctx "port" 8001) | nindent 8 }}
    spec:
      {{- include "substra.podCommon" (dict "ctx" $ctx "image" $v.image "security" $v "scheduling" $block "serviceAccountName" (include "substra.serviceAccountName" (dict "ctx" $ctx "block" $block "component" $role))) | nindent 6 }}
      {{- with include "substra.waitMigrations" (dict "ctx" $ctx "block" $block) }}
      initContainers:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $role }}
          image: {{ include "substra.image" (dict "ctx" $ctx "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: ["backend-worker", {{ $role | quote }}]
          {{- include "substra.envFrom" $ctx | nindent 10 }}
          env:
            {{- include "substra.env" (dict "ctx" $ctx) | nindent 12 }}
            - name: CELERY_WORKER_CONCURRENCY
              value: {{ $block.concurrency | quote }}
            - name: WORKER_PVC_SUBTUPLE
              value: subtuple
            - name: WORKER_PVC_DOCKER_CACHE
              value: docker-cache
            # Prefork children count too: prometheus_client then keeps values in shared files.
            - name: PROMETHEUS_MULTIPROC_DIR
              value: /var/run/prometheus
            - name: K8S_SECRET_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            {{- with $v.maintenance }}
            # Maintenance of this replica's disk (the scheduler's broadcasts), builders included.
            - name: ASSET_BUFFER_MAX_AGE
              value: {{ include "substra.envNumber" .assetBufferMaxAge }}
            - name: TASK_DIR_MAX_AGE
              value: {{ include "substra.envNumber" .taskDirMaxAge }}
            - name: FUNCTION_ENVIRONMENT_MAX_AGE
              value: {{ include "substra.envNumber" .functionEnvironmentMaxAge }}
            {{- end }}
            {{- with $v.computePod }}
            - name: COMPUTE_POD_STARTUP_TIMEOUT_SECONDS
              value: {{ .maxStartupWaitSeconds | quote }}
            - name: COMPUTE_POD_MAX_STARTUP_WAIT_SECONDS
              value: {{ .maxStartupWaitSeconds | quote }}
            - name: COMPUTE_POD_RUN_AS_USER
              value: {{ .securityContext.runAsUser | quote }}
            - name: COMPUTE_POD_RUN_AS_GROUP
              value: {{ .securityContext.runAsGroup | quote }}
            - name: COMPUTE_POD_FS_GROUP
              value: {{ .securityContext.fsGroup | quote }}
            {{- /* YAML documents, as the reference reads them; JSON is YAML. */}}
            - name: COMPUTE_POD_RESOURCES
              value: {{ .resources | toJson | quote }}
            - name: COMPUTE_POD_NODE_SELECTOR
              value: {{ .nodeSelector | toJson | quote }}
            - name: COMPUTE_POD_TOLERATIONS
              value: {{ .tolerations | toJson | quote }}
            - name: COMPUTE_POD_AFFINITY
              value: {{ .affinity | toJson | quote }}
            {{- with .dockerConfigSecretName }}
            - name: DOCKER_CONFIG_SECRET_NAME
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if eq $role "builder" }}
            - name: IMAGE_BUILD_TIMEOUT
              value: {{ $block.timeout | quote }}
            - name: BUILDER_KANIKO_STARTUP_MAX_ATTEMPTS
              value: {{ $block.kanikoStartup.maxAttempts | quote }}
            - name: BUILDER_KANIKO_STARTUP_PENDING_STATE_WAIT_SECONDS
              value: {{ $block.kanikoStartup.checkDelay | quote }}
            - name: IMAGE_SAVING_TIMEOUT_SECONDS
              value: {{ $block.saveImageTimeoutSeconds | quote }}
            {{- with $v.kaniko }}
            - name: KANIKO_IMAGE
              value: {{ printf "%s/%s:%s" .image.registry .image.repository .image.tag | trimPrefix "/" | quote }}
            - name: KANIKO_MIRROR
              value: {{ .mirror | quote }}
            - name: KANIKO_RESOURCES
              value: {{ .resources | toJson | quote }}
            {{- with .dockerConfigSecretName }}
            - name: KANIKO_DOCKER_CONFIG_SECRET_NAME
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: 8001
              protocol: TCP
          {{- with $block.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "substra.containerSecurityContext" $ctx | nindent 10 }}
          volumeMounts:
            - name: subtuple
              mountPath: /var/substra/medias/subtuple
            {{- if eq $role "builder" }}
            - name: docker-cache
              mountPath: /var/substra/docker-cache
            {{- end }}
            - name: prometheus
              mountPath: /var/run/prometheus
            - name: tmp
              mountPath: /tmp
            {{- include "substra.orchestratorTls.volumeMounts" (dict "ctx" $ctx "indent" 12) }}
      volumes:
        - name: prometheus
          emptyDir: {}
        - name: tmp
          emptyDir: {}
        {{- include "substra.orchestratorTls.volumes" (dict "ctx" $ctx "indent" 8) }}
  volumeClaimTemplates:
    - metadata:
        name: subtuple
      spec:
        accessModes:
          {{- toYaml $block.accessModes | nindent 10 }}
        {{- include "substra.storageClass" (dict "class" $block.persistence.storageClass "indent" 8) }}
        resources:
          requests:
            storage: {{ $block.persistence.size | quote }}
    {{- if eq $role "builder" }}
    - metadata:
        name: docker-cache
      spec:
        accessModes:
          {{- toYaml $block.accessModes | nindent 10 }}
        {{- include "substra.storageClass" (dict "class" $block.persistence.storageClass "indent" 8) }}
        resources:
          requests:
            storage: {{ $block.persistence.dockerCacheSize | quote }}
    {{- end }}
---
# Headless Service: the StatefulSet's pod identities (and a metrics endpoint per replica).
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
spec:
  clusterIP: None
  ports:
    - name: metrics
      port: 8001
      targetPort: metrics
  selector:
    {{- include "substra.selectorLabels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
{{- end -}}

{{/*
ServiceAccount, Role and RoleBinding of a role (operations.md 6.5). The builder also writes
secrets (the private CA's `ca-certificates`). Call like worker.statefulset.
*/}}
{{- define "worker.rbac" -}}
{{- $ctx := .ctx -}}
{{- $role := .role -}}
{{- $name := include "substra.componentName" (dict "ctx" $ctx "component" $role) -}}
{{- $sa := include "substra.serviceAccountName" (dict "ctx" $ctx "block" .block "component" $role) -}}
{{- if .block.serviceAccount.create }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $sa }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
{{- end }}
{{- if $ctx.Values.rbac.create }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
rules:
  # Compute and image-build pods: created, watched, exec'ed into, deleted.
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
  - apiGroups: [""]
    resources: ["pods/exec"]
    verbs: ["get", "create"]
  - apiGroups: [""]
    resources: ["pods/log", "pods/status"]
    verbs: ["get", "list", "watch"]
  # The registry's NodePort.
  - apiGroups: [""]
    resources: ["services"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["secrets"]
    {{- if eq $role "builder" }}
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
    {{- else }}
    # Chain keys of compute plans.
    verbs: ["get", "list", "watch"]
    {{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "substra.labels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ $ctx.Release.Namespace }}
{{- end }}
{{- end -}}
