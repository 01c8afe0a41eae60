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
{{/* The Service of the NATS chart deployed as this chart's dependency (named as that chart names it). */}}
{{- define "edge-isolates.natsServiceName" -}}
{{- $name := default "nats" .Values.nats.nameOverride }}
{{- if .Values.nats.fullnameOverride }}
{{- .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "true" when clients talk TLS to NATS: the NATS chart's server with TLS on, or an external tls:// URL. */}}
{{- define "edge-isolates.natsTls" -}}
{{- if .Values.nats.enabled }}
{{- if .Values.nats.config.nats.tls.enabled }}true{{ end }}
{{- else if hasPrefix "tls://" (.Values.nats.url | default "") }}true
{{- end }}
{{- end }}

{{/*
The URL operator and agents connect to: nats.url, or the Service of the NATS chart deployed
as this chart's dependency (tls:// when its TLS is on).
*/}}
{{- define "edge-isolates.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "%s://%s.%s.svc.%s:4222" (ternary "tls" "nats" (eq (include "edge-isolates.natsTls" .) "true")) (include "edge-isolates.natsServiceName" .) .Release.Namespace .Values.clusterDomain }}
{{- else if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else }}
{{- fail "nats: set nats.url to an external NATS server with JetStream (nats://host:4222), or nats.enabled=true to deploy one with the official NATS chart" }}
{{- end }}
{{- end }}

{{- define "edge-isolates.sealingKeySecretName" -}}
{{- default (printf "%s-sealing-key" (include "edge-isolates.fullname" .)) .Values.secretSealing.existingSecret }}
{{- end }}

{{/*
What the operator and the agents need to reach NATS and open sealed Secret values: call with
(list $ "operator"|"agent"). Args, env, volumeMounts and volumes, each under its own key.
*/}}
{{- define "edge-isolates.natsClientArgs" -}}
{{- $ := index . 0 }}
- --nats={{ include "edge-isolates.natsUrl" $ }}
- --nats-user={{ index $.Values.natsAuth.users (index . 1) }}
{{- if eq (include "edge-isolates.natsTls" $) "true" }}
- --nats-ca=/etc/edge-isolates/nats-ca/ca.crt
{{- end }}
- --sealing-key-file=/etc/edge-isolates/sealing/{{ $.Values.secretSealing.key }}
{{- end }}

{{- define "edge-isolates.natsClientEnv" -}}
{{- $ := index . 0 }}
- name: EDGE_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.natsAuth.secretName }}
      key: {{ index . 1 }}
{{- end }}

{{- define "edge-isolates.natsClientVolumeMounts" -}}
{{- if eq (include "edge-isolates.natsTls" .) "true" }}
- name: nats-ca
  mountPath: /etc/edge-isolates/nats-ca
  readOnly: true
{{- end }}
- name: sealing-key
  mountPath: /etc/edge-isolates/sealing
  readOnly: true
{{- end }}

{{/* Only the CA of the NATS TLS Secret is mounted: never the server's key. */}}
{{- define "edge-isolates.natsClientVolumes" -}}
{{- if eq (include "edge-isolates.natsTls" .) "true" }}
- name: nats-ca
  secret:
    secretName: {{ .Values.natsTls.secretName }}
    items: [{ key: ca.crt, path: ca.crt }]
{{- end }}
- name: sealing-key
  secret:
    secretName: {{ include "edge-isolates.sealingKeySecretName" . }}
    items: [{ key: {{ .Values.secretSealing.key }}, path: {{ .Values.secretSealing.key }} }]
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

{{/*
Checks that need more than the schema: region names unique; the NATS chart's values (which
cannot be templated) name the same Secrets as this chart's natsAuth and natsTls.
*/}}
{{- define "edge-isolates.validate" -}}
{{- if .Values.nats.enabled }}
{{- if and .Values.nats.config.nats.tls.enabled (ne (.Values.nats.config.nats.tls.secretName | default "") .Values.natsTls.secretName) }}
{{- fail (printf "nats.config.nats.tls.secretName (%q) must equal natsTls.secretName (%q): the server's certificate and the CA its clients trust come from that Secret" (.Values.nats.config.nats.tls.secretName | default "") .Values.natsTls.secretName) }}
{{- end }}
{{- range $env, $v := .Values.nats.container.env }}
{{- if and (kindIs "map" $v) $v.valueFrom $v.valueFrom.secretKeyRef (hasPrefix "EDGE_NATS_" $env) (ne $v.valueFrom.secretKeyRef.name $.Values.natsAuth.secretName) }}
{{- fail (printf "nats.container.env.%s reads Secret %q; it must be natsAuth.secretName (%q), where this chart keeps the NATS passwords" $env $v.valueFrom.secretKeyRef.name $.Values.natsAuth.secretName) }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.regions }}
{{- if hasKey $seen .name }}
{{- fail (printf "regions: region %q is listed twice; each region gets one agent DaemonSet and Service" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- end }}
