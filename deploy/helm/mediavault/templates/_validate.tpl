{{/*
Refuses, at render time, values that would deploy something other than what
they say. Included by the Deployment, so `helm install`, `helm upgrade`,
`helm template` and `helm lint` all stop with the message.
*/}}
{{- define "mediavault.validateValues" -}}
{{- $secret := .Values.secret }}
{{- if $secret.existingSecret }}
{{- /*
With existingSecret the chart creates no Secret, so a secret given in values
would be dropped without a word; for the admin token the Deployment would
still name the file and the pod would exit at start. Keeping all secrets in
the one existing Secret is the reason to name one, so point there.
*/}}
{{- range $key, $entry := dict "databaseUrl" "database-url" "cryptoKeys" "crypto-keys" "s3SecretAccessKey" "s3-secret-access-key" "adminToken" "admin-token" "linksKeys" "links-keys" }}
{{- if index $secret $key }}
{{- $flags := dict "adminToken" ", set secret.existingSecretHasAdminToken=true" "linksKeys" ", set secret.existingSecretHasLinksKeys=true" }}
{{- $then := index $flags $key | default "" }}
{{- fail (printf "secret.%s would be ignored: with secret.existingSecret (%s) the chart creates no Secret. Put the value in %s under the key %s%s and leave secret.%s empty" $key $secret.existingSecret $secret.existingSecret $entry $then $key) }}
{{- end }}
{{- end }}
{{- else if $secret.existingSecretHasAdminToken }}
{{- fail "secret.existingSecretHasAdminToken is set without secret.existingSecret: name the Secret that holds admin-token, or set secret.adminToken instead" }}
{{- else if $secret.existingSecretHasLinksKeys }}
{{- fail "secret.existingSecretHasLinksKeys is set without secret.existingSecret: name the Secret that holds links-keys, or set secret.linksKeys instead" }}
{{- end }}
{{- /*
The kubelet's preStop sleep action is on by default from Kubernetes 1.30;
older API servers reject or drop the field, so refuse rather than deploy a
pod without the pause the operator asked for. "-0" admits vendor versions
such as v1.30.2-eks-1552ad0.
*/}}
{{- if and (gt (int .Values.lifecycle.preStopSleepSeconds) 0) (not (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version)) }}
{{- fail (printf "lifecycle.preStopSleepSeconds needs Kubernetes 1.30 or newer (the kubelet's preStop sleep action); this cluster is %s: set it to 0" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
