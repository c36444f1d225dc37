{{/* Chart name, or nameOverride. */}}
{{- define "mediavault.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>" (or the release name alone if it contains the chart name), or fullnameOverride. */}}
{{- define "mediavault.fullname" -}}
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

{{/* Labels on every resource. */}}
{{- define "mediavault.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mediavault.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pods; never change them on upgrade. */}}
{{- define "mediavault.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mediavault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret the pods read: secret.existingSecret, or the one this chart makes. */}}
{{- define "mediavault.secretName" -}}
{{- .Values.secret.existingSecret | default (include "mediavault.fullname" .) }}
{{- end }}

{{/* Whether an S3 secret access key is expected (it goes with an access key id). */}}
{{- define "mediavault.hasS3Key" -}}
{{- if .Values.config.blobs.access_key_id }}true{{ end }}
{{- end }}

{{/*
A config value as an environment variable string. Helm reads numbers in
values.yaml as floats, which would print 104857600 as "1.048576e+08".
*/}}
{{- define "mediavault.envValue" -}}
{{- if kindIs "float64" . }}{{ . | int64 }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
Whether the Secret the pods read holds an entry: (list $ VALUE FLAG) with
VALUE the secret.* value the chart's own Secret takes it from, and FLAG the
secret.existingSecretHas* flag that says an existing Secret holds it.
mediavault.validateValues refuses such a value next to existingSecret, where
it could not reach the pods. "true" or empty.
*/}}
{{- define "mediavault.secretHolds" -}}
{{- $secret := (index . 0).Values.secret }}
{{- if $secret.existingSecret }}
{{- if index $secret (index . 2) }}true{{ end }}
{{- else if index $secret (index . 1) }}true{{ end }}
{{- end }}

{{/* Whether the admin API is enabled: its token is in the Secret. */}}
{{- define "mediavault.hasAdminToken" -}}
{{- include "mediavault.secretHolds" (list . "adminToken" "existingSecretHasAdminToken") }}
{{- end }}

{{/* Whether /metrics asks for a token: it is in the Secret. */}}
{{- define "mediavault.hasMetricsToken" -}}
{{- include "mediavault.secretHolds" (list . "metricsToken" "existingSecretHasMetricsToken") }}
{{- end }}

{{/* Whether the Secret holds links-keys. */}}
{{- define "mediavault.hasLinksKeys" -}}
{{- include "mediavault.secretHolds" (list . "linksKeys" "existingSecretHasLinksKeys") }}
{{- end }}

{{/*
Whether the Secret holds crypto-keys (an existing one does unless said
otherwise). Only with hsm.enabled may it hold none.
*/}}
{{- define "mediavault.hasCryptoKeys" -}}
{{- include "mediavault.secretHolds" (list . "cryptoKeys" "existingSecretHasCryptoKeys") }}
{{- end }}

{{/* Whether the Secret holds hsm-pin, the PKCS#11 token's user PIN. */}}
{{- define "mediavault.hasHsmPin" -}}
{{- include "mediavault.secretHolds" (list . "hsmPin" "existingSecretHasHsmPin") }}
{{- end }}

{{/*
A value as a quoted TOML string for a MEDIAVAULT__ variable: the service
would read an unquoted label of digits as a number and refuse it.
*/}}
{{- define "mediavault.tomlString" -}}
{{- . | toString | toJson }}
{{- end }}
