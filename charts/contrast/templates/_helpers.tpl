{{/* Name prefix of the release's namespaced objects: the release name, with "-contrast" unless it says so. */}}
{{- define "contrast.fullname" -}}
{{- if contains "contrast" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-contrast" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of the release's cluster-scoped objects: unique per release and namespace, so two releases never collide. */}}
{{- define "contrast.clusterName" -}}
{{- printf "%s-%s" (include "contrast.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "contrast.webhookName" -}}{{ include "contrast.fullname" . }}-webhook{{- end -}}
{{- define "contrast.coordinatorName" -}}{{ include "contrast.fullname" . }}-coordinator{{- end -}}
{{- define "contrast.meshServiceName" -}}{{ include "contrast.fullname" . }}-coordinator-mesh{{- end -}}
{{- define "contrast.webhookConfigName" -}}{{ include "contrast.clusterName" . }}{{- end -}}

{{/* Selector labels of a component (pass a dict with "root" and "component"). Stable across chart versions. */}}
{{- define "contrast.selectorLabels" -}}
app.kubernetes.io/name: contrast
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object (pass a dict with "root" and "component"). */}}
{{- define "contrast.labels" -}}
{{ include "contrast.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: contrast
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The Coordinator's --platform. */}}
{{- define "contrast.coordinatorPlatform" -}}
{{- if .Values.simulated -}}{{ .Values.platform }}-simulated{{- else -}}{{ .Values.platform }}{{- end -}}
{{- end -}}

{{/* host:port of the Coordinator's mesh API for the Initializer. */}}
{{- define "contrast.coordinatorAddress" -}}
{{- if .Values.webhook.coordinatorAddress -}}
{{- .Values.webhook.coordinatorAddress -}}
{{- else if .Values.coordinator.meshService.clusterIP -}}
{{- .Values.coordinator.meshService.clusterIP }}:7777
{{- else -}}
{{- include "contrast.meshServiceName" . }}.{{ .Release.Namespace }}.svc:7777
{{- end -}}
{{- end -}}

{{/* Checks across values that the schema cannot express with a clear message; fails the render. */}}
{{- define "contrast.validate" -}}
{{- range $key, $ref := .Values.images -}}
{{- if not $ref -}}
{{- fail (printf "images.%s is required: the image pinned by digest (name@sha256:...); `make images REGISTRY=...` builds and prints all four" $key) -}}
{{- end -}}
{{- end -}}
{{- $handler := .Values.runtimeClass.handler -}}
{{- if and .Values.simulated (hasPrefix "kata-" $handler) -}}
{{- fail (printf "simulated: true is refused with runtimeClass.handler %q: a Kata handler runs real confidential VMs; the simulated TEE is for the local test cluster (handler runc)" $handler) -}}
{{- end -}}
{{- if and (not .Values.simulated) (eq $handler "runc") -}}
{{- fail (printf "runtimeClass.handler %q gives no TEE: set simulated: true for the local test cluster, or a Kata handler (kata-qemu-%s) for platform %q" $handler .Values.platform .Values.platform) -}}
{{- end -}}
{{- if and .Values.coordinator.simAuthoritySecret (not .Values.simulated) -}}
{{- fail "coordinator.simAuthoritySecret is for simulated: true only" -}}
{{- end -}}
{{- if and .Values.coordinator.simMeasurement (not .Values.simulated) -}}
{{- fail "coordinator.simMeasurement is for simulated: true only" -}}
{{- end -}}
{{- end -}}

{{- define "contrast.settingsName" -}}{{ include "contrast.fullname" . }}-settings{{- end -}}
{{- define "contrast.settingsKey" -}}settings.yaml{{- end -}}

{{/* The injection settings file: flag name (webhook/inject/settings) → value. */}}
{{- define "contrast.settings" -}}
{{- $s := dict
  "runtime-class" .Values.runtimeClass.name
  "initializer-image" .Values.images.initializer
  "proxy-image" .Values.images.meshProxy
  "coordinator-address" (include "contrast.coordinatorAddress" .)
  "policy-mode" .Values.webhook.policyMode
  "registry-platform" .Values.webhook.registry.platform
  "platform" (include "contrast.coordinatorPlatform" .) -}}
{{- with .Values.coordinator.policyHash }}{{ $_ := set $s "coordinator-policy-hash" (list .) }}{{ end -}}
{{- with .Values.coordinator.referenceValues }}{{ $_ := set $s "coordinator-reference-values" (toJson .) }}{{ end -}}
{{- $mirrors := list -}}
{{- range $registry, $urls := .Values.webhook.registry.mirrors -}}
{{- range $urls -}}
{{- $mirrors = append $mirrors (printf "%s=%s" $registry .) -}}
{{- end -}}
{{- end -}}
{{- with $mirrors }}{{ $_ := set $s "registry-mirror" . }}{{ end -}}
{{- with .Values.webhook.registry.skipOrigin }}{{ $_ := set $s "registry-skip-origin" . }}{{ end -}}
{{- with .Values.webhook.registry.insecure }}{{ $_ := set $s "registry-insecure" . }}{{ end -}}
{{- toYaml $s -}}
{{- end -}}
