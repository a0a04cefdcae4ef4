{{/* Name of the chart's objects: <release>-fedward-hospital (or the release name if it contains the chart name). */}}
{{- define "fedward-hospital.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fedward-hospital.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fedward-hospital.labels" -}}
{{ include "fedward-hospital.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedward
{{- end -}}

{{/* The CPU image, or the CUDA build (tag + gpu.tagSuffix) with gpu.enabled. */}}
{{- define "fedward-hospital.image" -}}
{{- $tag := .Values.image.tag -}}
{{- if .Values.gpu.enabled -}}
{{- $tag = printf "%s%s" $tag .Values.gpu.tagSuffix -}}
{{- end -}}
{{ printf "%s:%s" .Values.image.repository $tag | quote }}
{{- end -}}
