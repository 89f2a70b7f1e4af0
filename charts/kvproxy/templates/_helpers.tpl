{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "kvproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else <release>-<name>,
or the release name alone when it already contains the chart name.
*/}}
{{- define "kvproxy.fullname" -}}
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

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "kvproxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "kvproxy.labels" -}}
helm.sh/chart: {{ include "kvproxy.chart" . }}
{{ include "kvproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ include "kvproxy.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: token-broker
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the release's pods.
*/}}
{{- define "kvproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount the pods run as.
*/}}
{{- define "kvproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kvproxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "kvproxy.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Image reference, pinned by digest when one is given.
*/}}
{{- define "kvproxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "kvproxy.imageTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "kvproxy.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Label key that marks a client pod.
*/}}
{{- define "kvproxy.clientLabel" -}}
{{- default (printf "%s-client" (include "kvproxy.fullname" .)) .Values.networkPolicy.clientLabel }}
{{- end }}

{{/*
host:port for a listener; IPv6 hosts get brackets.
*/}}
{{- define "kvproxy.listenAddr" -}}
{{- $host := index . 0 }}
{{- $port := index . 1 }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int $port) }}
{{- else }}
{{- printf "%s:%d" $host (int $port) }}
{{- end }}
{{- end }}

{{/*
Whether the cluster serves a Prometheus Operator kind (or rendering is forced).
Call with (list $ "ServiceMonitor" .Values.serviceMonitor).
*/}}
{{- define "kvproxy.monitoringEnabled" -}}
{{- $root := index . 0 }}
{{- $kind := index . 1 }}
{{- $v := index . 2 }}
{{- if and $v.enabled (or $v.force ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind))) }}true{{ end }}
{{- end }}

{{/*
The Service's DNS names, comma-separated: what clients may put in Host
(KVPROXY_ALLOWED_HOSTS) and what the certificate names.
*/}}
{{- define "kvproxy.serviceNames" -}}
{{- $svc := include "kvproxy.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) }}
{{- join "," $names }}
{{- end }}

{{/*
Name of the Secret holding the serving certificate, "" without TLS.
*/}}
{{- define "kvproxy.tlsSecret" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "kvproxy.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Whether the chart projects the pod's own ServiceAccount token (and the
cluster CA) for fetching the issuer's keys.
*/}}
{{- define "kvproxy.projectApiToken" -}}
{{- if and .Values.clientAuth.enabled (not .Values.automountServiceAccountToken) (hasPrefix "/var/run/secrets/kubernetes.io/serviceaccount/" .Values.clientAuth.tokenFile) }}true{{ end }}
{{- end }}

{{/*
The proxy's URL for clients.
*/}}
{{- define "kvproxy.url" -}}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" (ne (include "kvproxy.tlsSecret" .) "")) (include "kvproxy.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
