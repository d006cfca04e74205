{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "ho.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object-name prefix: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "ho.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ho.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ho.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hierarchical-options
{{- with .Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "mlflow"). */}}
{{- define "ho.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ho.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* repository@digest when a digest is set, else repository:tag; call with (dict "image" .Values.x.image "default" "tag"). */}}
{{- define "ho.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
{{- end }}
{{- end }}

{{/* MLflow object names and its in-cluster URL. */}}
{{- define "ho.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "ho.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ho.mlflow.serviceAccountName" -}}
{{- if .Values.mlflow.serviceAccount.create }}
{{- default (include "ho.mlflow.fullname" .) .Values.mlflow.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.mlflow.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ho.mlflow.url" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "ho.mlflow.fullname" .) .Release.Namespace .Values.global.clusterDomain .Values.mlflow.service.port }}
{{- end }}

{{/* Trainer namespace, service account, tracking URI. */}}
{{- define "ho.trainer.namespace" -}}
{{- .Values.trainer.namespace.name }}
{{- end }}

{{- define "ho.trainer.serviceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create }}
{{- default (printf "%s-trainer" (include "ho.fullname" .) | trunc 63 | trimSuffix "-") .Values.trainer.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.trainer.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ho.trainer.trackingUri" -}}
{{- if .Values.trainer.mlflowTrackingUri }}
{{- .Values.trainer.mlflowTrackingUri }}
{{- else if .Values.mlflow.enabled }}
{{- include "ho.mlflow.url" . }}
{{- else }}
{{- fail "trainer.mlflowTrackingUri is required when mlflow.enabled is false" }}
{{- end }}
{{- end }}

{{/* One placement (resources, node selector, tolerations, priority class, scratch size) in pipeline.yaml's
shape; call with trainer.placement.<cpu|gpu>. An empty or null priorityClassName / scratchSize renders null. */}}
{{- define "ho.pipeline.placement" -}}
resources:
  cpu: {{ .resources.cpu | toString | quote }}
  memory: {{ .resources.memory | toString | quote }}
  gpu: {{ .resources.gpu | int }}
node_selector:
  {{- toYaml (default (dict) .nodeSelector) | nindent 2 }}
tolerations:
  {{- toYaml (default (list) .tolerations) | nindent 2 }}
priority_class_name: {{ if .priorityClassName }}{{ .priorityClassName | quote }}{{ else }}null{{ end }}
scratch_size: {{ if .scratchSize }}{{ .scratchSize | toString | quote }}{{ else }}null{{ end }}
{{- end }}

{{/* One Airflow pool in pipeline.yaml's shape ({name, slots}), or nothing for null; call with trainer.<gpu|cpu>Pool. */}}
{{- define "ho.pipeline.pool" -}}
{{- if . }}
name: {{ .name | quote }}
slots: {{ .slots | int }}
{{- end }}
{{- end }}

{{/* One stage's step counts in pipeline.yaml's shape; call with pipeline.profiles.<name>.<smoke|full>. */}}
{{- define "ho.pipeline.steps" -}}
total_timesteps: {{ .totalTimesteps | int }}
n_envs: {{ .nEnvs | int }}
eval_freq: {{ .evalFreq | int }}
{{- end }}

{{/* The auth database URI's Secret reference: mlflow.auth.database, or the backend store's when its name is empty. */}}
{{- define "ho.mlflow.authDatabaseRef" -}}
{{- $db := .Values.mlflow.auth.database }}
{{- if $db.existingSecret -}}
name: {{ $db.existingSecret }}
key: {{ $db.uriKey }}
{{- else -}}
name: {{ .Values.mlflow.backendStore.existingSecret }}
key: {{ .Values.mlflow.backendStore.uriKey }}
{{- end }}
{{- end }}

{{/* Where the server reads basic_auth.ini (an in-memory emptyDir the init container writes). */}}
{{- define "ho.mlflow.authConfigPath" -}}
/etc/mlflow/auth/basic_auth.ini
{{- end }}

{{/* imagePullSecrets of a pod spec from global.imagePullSecrets (nothing when empty). */}}
{{- define "ho.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
