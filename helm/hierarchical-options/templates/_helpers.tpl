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

{{/* The GPU training pod (KubernetesPodOperator pod_template): the DAG's operator sets the
     command/arguments and the pod name; everything about placement and safety is here. */}}
{{- define "ho.trainer.podTemplate" -}}
apiVersion: v1
kind: Pod
metadata:
  name: trainer
  namespace: {{ include "ho.trainer.namespace" . }}
  labels:
    {{- include "ho.labels" . | nindent 4 }}
    app.kubernetes.io/component: trainer
  {{- with .Values.trainer.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "ho.trainer.serviceAccountName" . }}
  # Trainer pods never talk to the Kubernetes API.
  automountServiceAccountToken: false
  restartPolicy: Never
  {{- with .Values.global.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.trainer.podSecurityContext | nindent 4 }}
  {{- with .Values.trainer.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.trainer.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.trainer.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    # KubernetesPodOperator merges its container into the one named "base".
    - name: base
      image: {{ include "ho.image" (dict "image" .Values.trainer.image "default" .Chart.AppVersion) }}
      imagePullPolicy: {{ .Values.trainer.image.pullPolicy }}
      env:
        - name: TRAINER_BACKEND
          value: kubernetes
        - name: MLFLOW_TRACKING_URI
          value: {{ include "ho.trainer.trackingUri" . | quote }}
        - name: TRAINER_STATE_DIR
          value: /workspace/state
        {{- with .Values.trainer.s3EndpointUrl }}
        - name: AWS_ENDPOINT_URL
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.trainer.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.trainer.envFromSecrets }}
      envFrom:
        {{- range . }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      {{- end }}
      resources:
        {{- $resources := deepCopy .Values.trainer.resources }}
        {{- if .Values.trainer.gpu.enabled }}
        {{- $limits := default (dict) $resources.limits }}
        {{- $_ := set $limits .Values.trainer.gpu.resourceName (.Values.trainer.gpu.count | toString) }}
        {{- $_ := set $resources "limits" $limits }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.trainer.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: workspace
          mountPath: /workspace
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: workspace
      emptyDir:
        sizeLimit: {{ .Values.trainer.workspaceSizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
{{- end }}
