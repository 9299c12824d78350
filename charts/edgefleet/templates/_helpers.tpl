{{/* Common labels of every object of the release. */}}
{{- define "edgefleet.labels" -}}
app.kubernetes.io/name: edgefleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The operator pods' selector. */}}
{{- define "edgefleet.selector" -}}
app.kubernetes.io/name: edgefleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Name prefix of the release's objects. */}}
{{- define "edgefleet.name" -}}
{{- if eq .Release.Name "edgefleet" }}edgefleet{{ else }}{{ printf "%s-edgefleet" .Release.Name | trunc 50 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* An image reference: by digest when one is given, else by tag. Usage: include "edgefleet.image" (list . "sidecar") */}}
{{- define "edgefleet.image" -}}
{{- $root := index . 0 -}}
{{- $image := index $root.Values.image (index . 1) -}}
{{- $base := printf "%s/%s" $root.Values.image.registry $image.repository -}}
{{- if $image.digest -}}
{{ $base }}@{{ $image.digest }}
{{- else -}}
{{ $base }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end -}}
{{- end }}
