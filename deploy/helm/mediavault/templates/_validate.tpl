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
{{- range $key, $entry := dict "databaseUrl" "database-url" "cryptoKeys" "crypto-keys" "s3SecretAccessKey" "s3-secret-access-key" "adminToken" "admin-token" "metricsToken" "metrics-token" "linksKeys" "links-keys" "hsmPin" "hsm-pin" }}
{{- if index $secret $key }}
{{- $flags := dict "adminToken" ", set secret.existingSecretHasAdminToken=true" "metricsToken" ", set secret.existingSecretHasMetricsToken=true" "linksKeys" ", set secret.existingSecretHasLinksKeys=true" "hsmPin" ", set secret.existingSecretHasHsmPin=true" }}
{{- $then := index $flags $key | default "" }}
{{- fail (printf "secret.%s would be ignored: with secret.existingSecret (%s) the chart creates no Secret. Put the value in %s under the key %s%s and leave secret.%s empty" $key $secret.existingSecret $secret.existingSecret $entry $then $key) }}
{{- end }}
{{- end }}
{{- else if $secret.existingSecretHasAdminToken }}
{{- fail "secret.existingSecretHasAdminToken is set without secret.existingSecret: name the Secret that holds admin-token, or set secret.adminToken instead" }}
{{- else if $secret.existingSecretHasMetricsToken }}
{{- fail "secret.existingSecretHasMetricsToken is set without secret.existingSecret: name the Secret that holds metrics-token, or set secret.metricsToken instead" }}
{{- else if $secret.existingSecretHasLinksKeys }}
{{- fail "secret.existingSecretHasLinksKeys is set without secret.existingSecret: name the Secret that holds links-keys, or set secret.linksKeys instead" }}
{{- else if $secret.existingSecretHasHsmPin }}
{{- fail "secret.existingSecretHasHsmPin is set without secret.existingSecret: name the Secret that holds hsm-pin, or set secret.hsmPin instead" }}
{{- end }}
{{- /*
The KEKs are configured keys, a PKCS#11 token's, or both; the service would
exit at start with neither, or with a token it cannot find or log in to.
*/}}
{{- $hsm := .Values.hsm }}
{{- if $hsm.enabled }}
{{- if not $hsm.module }}
{{- fail "hsm.enabled needs hsm.module: the path of the vendor's PKCS#11 library inside the container" }}
{{- end }}
{{- if and $hsm.tokenLabel (ne (toString $hsm.slot) "") }}
{{- fail "hsm.tokenLabel and hsm.slot both name the token: set one of them" }}
{{- end }}
{{- if and (not $hsm.tokenLabel) (eq (toString $hsm.slot) "") }}
{{- fail "hsm.enabled needs the token: set hsm.tokenLabel or hsm.slot" }}
{{- end }}
{{- if not (include "mediavault.hasHsmPin" .) }}
{{- fail "hsm.enabled needs the token's user PIN: set secret.hsmPin, or secret.existingSecretHasHsmPin=true with hsm-pin in secret.existingSecret" }}
{{- end }}
{{- if and (not $hsm.keys) (not $hsm.epochs.enabled) (not (include "mediavault.hasCryptoKeys" .)) }}
{{- fail "hsm.enabled has no key to wrap new files with: list the token's KEK labels in hsm.keys, enable hsm.epochs, or give secret.cryptoKeys" }}
{{- end }}
{{- else }}
{{- if and $secret.existingSecret (not $secret.existingSecretHasCryptoKeys) }}
{{- fail "secret.existingSecretHasCryptoKeys is false without hsm.enabled: the service has no KEK; put crypto-keys in secret.existingSecret, or keep the KEKs in a token with hsm.enabled" }}
{{- end }}
{{- if or $hsm.epochs.enabled $hsm.keys $secret.hsmPin $secret.existingSecretHasHsmPin }}
{{- fail "hsm.keys, hsm.epochs and the token's PIN take effect only with hsm.enabled: set hsm.enabled=true, or leave them unset" }}
{{- end }}
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
