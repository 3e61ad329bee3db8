{{/*
The schema upgrade run before the server starts (reference: init-migrate). The migrations image
holds `backend-migrations`; the server image does not.
*/}}
{{- define "server.initMigrate" }}
- name: init-migrate
  image: {{ include "substra.migrationsImage" . }}
  imagePullPolicy: {{ .Values.global.migrationsImage.pullPolicy }}
  command: ["backend-migrations", "upgrade"]
  {{- include "substra.envFrom" . | nindent 2 }}
  env:
    {{- include "substra.env" (dict "ctx" .) | nindent 4 }}
  {{- include "substra.containerSecurityContext" . | nindent 2 }}
{{- end }}
