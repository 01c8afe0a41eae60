{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "edge-isolates.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix for every object: the release name alone when it already names the chart. */}}
{{- define "edge-isolates.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edge-isolates.operatorName" -}}
{{- printf "%s-operator" (include "edge-isolates.fullname" .) }}
{{- end }}

{{- define "edge-isolates.agentServiceAccountName" -}}
{{- printf "%s-agent" (include "edge-isolates.fullname" .) }}
{{- end }}

{{/* DaemonSet, Service and PodDisruptionBudget of one region: call with (list $ $region). */}}
{{- define "edge-isolates.agentName" -}}
{{- printf "%s-agent-%s" (include "edge-isolates.fullname" (index . 0)) (index . 1).name }}
{{- end }}

{{- define "edge-isolates.leaseName" -}}
{{- default (include "edge-isolates.operatorName" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/* Where model servers live: operator.modelNamespace (an existing namespace) or the release's. */}}
{{- define "edge-isolates.modelNamespace" -}}
{{- default .Release.Namespace .Values.operator.modelNamespace }}
{{- end }}

{{- define "edge-isolates.peerTokenSecretName" -}}
{{- default (printf "%s-peer-token" (include "edge-isolates.fullname" .)) .Values.agent.peerToken.existingSecret }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "edge-isolates.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-isolates.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edge-isolates.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edge-isolates.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: edge-isolates
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Images: <registry>/<repository>:<tag>, tag defaulting to the chart's appVersion. */}}
{{- define "edge-isolates.image" -}}
{{- $root := index . 0 }}
{{- $repo := index . 1 }}
{{- $image := printf "%s:%s" $repo ($root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- if $root.Values.image.registry }}
{{- $image = printf "%s/%s" $root.Values.image.registry $image }}
{{- end }}
{{- $image }}
{{- end }}

{{/* NATS ------------------------------------------------------------------------------- */}}

{{/*
The URL operator and agents connect to: nats.url, or the Service of the NATS chart deployed
as this chart's dependency (that chart names it like this chart names its own objects).
*/}}
{{- define "edge-isolates.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- $name := default "nats" .Values.nats.nameOverride }}
{{- $svc := "" }}
{{- if .Values.nats.fullnameOverride }}
{{- $svc = .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains $name .Release.Name }}
{{- $svc = .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $svc = printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- printf "nats://%s.%s.svc.%s:4222" $svc .Release.Namespace .Values.clusterDomain }}
{{- else if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else }}
{{- fail "nats: set nats.url to an external NATS server with JetStream (nats://host:4222), or nats.enabled=true to deploy one with the official NATS chart" }}
{{- end }}
{{- end }}

{{/* Security context shared by every container of the chart. */}}
{{- define "edge-isolates.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "edge-isolates.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Checks that need more than the schema: region names unique. */}}
{{- define "edge-isolates.validate" -}}
{{- $seen := dict }}
{{- range .Values.regions }}
{{- if hasKey $seen .name }}
{{- fail (printf "regions: region %q is listed twice; each region gets one agent DaemonSet and Service" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- end }}
