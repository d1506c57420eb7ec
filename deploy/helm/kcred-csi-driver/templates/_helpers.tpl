{{/*
The CSI driver name. It must match the CSIDriver object, the driver's
--driver-name flag, the plugin directory and the registration path, so it is
defined once, here. Pods name it in their inline volumes.
*/}}
{{- define "kcred-csi-driver.driverName" -}}
csi.kcred.io
{{- end -}}

{{- define "kcred-csi-driver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kcred-csi-driver.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kcred-csi-driver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kcred-csi-driver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kcred-csi-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kcred-csi-driver.labels" -}}
helm.sh/chart: {{ include "kcred-csi-driver.chart" . }}
{{ include "kcred-csi-driver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kcred
{{- end -}}

{{- define "kcred-csi-driver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kcred-csi-driver.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Kubelet's root directory, without a trailing slash. */}}
{{- define "kcred-csi-driver.kubeletDir" -}}
{{- required "kubeletDir is required" .Values.kubeletDir | trimSuffix "/" -}}
{{- end -}}

{{/* Host directory holding the driver's socket. */}}
{{- define "kcred-csi-driver.pluginDir" -}}
{{- printf "%s/plugins/%s" (include "kcred-csi-driver.kubeletDir" .) (include "kcred-csi-driver.driverName" .) -}}
{{- end -}}

{{/*
The controller endpoint; rendering fails without it, and when its scheme
does not match controller.caConfigMap (https:// with a CA, http:// without).
*/}}
{{- define "kcred-csi-driver.controllerEndpoint" -}}
{{- $endpoint := required "controller.endpoint is required: the kcred controller's node API as seen from the nodes, e.g. --set controller.endpoint=https://controller.example.com:7420" .Values.controller.endpoint -}}
{{- if and .Values.controller.caConfigMap (not (hasPrefix "https://" $endpoint)) -}}
{{- fail "controller.caConfigMap is set: controller.endpoint must be https://" -}}
{{- end -}}
{{- if and (hasPrefix "https://" $endpoint) (not .Values.controller.caConfigMap) -}}
{{- fail "controller.endpoint is https://: set controller.caConfigMap to a ConfigMap holding the controller's ca.crt" -}}
{{- end -}}
{{- $endpoint -}}
{{- end -}}

{{/* The controller's service principal; required with nodeIdentity. */}}
{{- define "kcred-csi-driver.controllerService" -}}
{{- required "controller.service is required with nodeIdentity.enabled: the controller's service principal, e.g. --set controller.service=kcred/controller.example.com@EXAMPLE.COM" .Values.controller.service -}}
{{- end -}}

{{/*
An image reference from an images.* entry: repository@digest when a digest
pins it, else repository:tag (tag defaulting to the second argument).
Usage: include "kcred-csi-driver.image" (list .Values.images.driver .Chart.AppVersion)
*/}}
{{- define "kcred-csi-driver.image" -}}
{{- $image := index . 0 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Whether the metrics Service is rendered (a ServiceMonitor needs it). */}}
{{- define "kcred-csi-driver.metricsService" -}}
{{- if and .Values.metrics.enabled (or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled) -}}
true
{{- end -}}
{{- end -}}

{{/* Fails rendering for value combinations that cannot work. */}}
{{- define "kcred-csi-driver.validate" -}}
{{- if and .Values.psat.enabled .Values.nodeIdentity.enabled -}}
{{- fail "psat.enabled and nodeIdentity.enabled are two node identities: choose one (set nodeIdentity.enabled=false for psat)" -}}
{{- end -}}
{{- if and .Values.clientCertificate.enabled (not .Values.controller.caConfigMap) -}}
{{- fail "clientCertificate.enabled needs TLS: set controller.caConfigMap (and an https:// controller.endpoint)" -}}
{{- end -}}
{{- if and (or .Values.metrics.podMonitor.enabled .Values.metrics.serviceMonitor.enabled .Values.metrics.service.enabled) (not .Values.metrics.enabled) -}}
{{- fail "metrics.service, metrics.podMonitor and metrics.serviceMonitor need metrics.enabled" -}}
{{- end -}}
{{- end -}}
