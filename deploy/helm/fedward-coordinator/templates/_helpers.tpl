{{/* Name of the chart's objects: <release>-fedward-coordinator (or the release name if it contains the chart name). */}}
{{- define "fedward-coordinator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fedward-coordinator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fedward-coordinator.labels" -}}
{{ include "fedward-coordinator.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedward
{{- end -}}

{{- define "fedward-coordinator.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{- define "fedward-coordinator.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-state" (include "fedward-coordinator.fullname" .)) -}}
{{- end -}}

{{/* The coordinator's state folder: a folder fedward creates inside the volume (it must own it). */}}
{{- define "fedward-coordinator.state" -}}
/state/coordinator
{{- end -}}
