{{/*
Names, labels and small derived values shared by all templates.

Components are addressed by their values key (coordinator, draftWorker, targetWorker);
"specdec.componentName" turns a key into the name used in resource names and labels.
*/}}

{{- define "specdec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "specdec.fullname" -}}
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

{{- define "specdec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "specdec.labels" -}}
helm.sh/chart: {{ include "specdec.chart" . }}
{{ include "specdec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: specdec
{{- end }}

{{- define "specdec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "specdec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* coordinator -> coordinator, draftWorker -> draft-worker, targetWorker -> target-worker */}}
{{- define "specdec.componentName" -}}
{{- . | kebabcase }}
{{- end }}

{{/* Labels of one component. Call with (dict "root" $ "key" "draftWorker"). */}}
{{- define "specdec.componentLabels" -}}
{{ include "specdec.labels" .root }}
app.kubernetes.io/component: {{ include "specdec.componentName" .key }}
{{- end }}

{{- define "specdec.componentSelectorLabels" -}}
{{ include "specdec.selectorLabels" .root }}
app.kubernetes.io/component: {{ include "specdec.componentName" .key }}
{{- end }}

{{/* <fullname>-<component>, e.g. myrel-specdec-draft-worker. Call with (dict "root" $ "key" ...). */}}
{{- define "specdec.componentFullname" -}}
{{- printf "%s-%s" (include "specdec.fullname" .root) (include "specdec.componentName" .key) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Service of a component: the coordinator's and the gateway's are ClusterIP Services, a worker's is headless. */}}
{{- define "specdec.serviceName" -}}
{{- if has .key (list "coordinator" "gateway") }}
{{- include "specdec.componentFullname" . }}
{{- else }}
{{- printf "%s-headless" (include "specdec.componentFullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/* The cluster DNS name of a component's Service (what peers dial and certificates name). */}}
{{- define "specdec.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "specdec.serviceName" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* host:port of a component's Service. */}}
{{- define "specdec.serviceAddress" -}}
{{- $comp := index .root.Values .key }}
{{- printf "%s:%d" (include "specdec.serviceHost" .) (int $comp.port) }}
{{- end }}

{{/* The comma-separated worker addresses the coordinator dials (--draft / --target). Call
with (dict "root" $ "key" "draftWorker"); empty when none. */}}
{{- define "specdec.workerAddresses" -}}
{{- $root := .root }}
{{- if eq $root.Values.discovery.mode "static" }}
{{- $list := ternary $root.Values.discovery.static.draft $root.Values.discovery.static.target (eq .key "draftWorker") }}
{{- join "," $list }}
{{- else if (index $root.Values .key).enabled }}
{{- include "specdec.serviceAddress" . }}
{{- end }}
{{- end }}

{{- define "specdec.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "specdec.coordinatorServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-coordinator" (include "specdec.fullname" .)) .Values.serviceAccount.coordinatorName }}
{{- else }}
{{- default "default" .Values.serviceAccount.coordinatorName }}
{{- end }}
{{- end }}

{{- define "specdec.workerServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-worker" (include "specdec.fullname" .)) .Values.serviceAccount.workerName }}
{{- else }}
{{- default "default" .Values.serviceAccount.workerName }}
{{- end }}
{{- end }}

{{/* The OTLP endpoint: explicit, else the in-chart Jaeger or Tempo, else empty. */}}
{{- define "specdec.otlpEndpoint" -}}
{{- $t := .Values.tracing }}
{{- if $t.otlpEndpoint }}
{{- $t.otlpEndpoint }}
{{- else if or $t.jaeger.enabled $t.tempo.enabled }}
{{- $backend := ternary "jaeger" "tempo" $t.jaeger.enabled }}
{{- printf "http://%s-%s.%s.svc.%s:4317" (include "specdec.fullname" .) $backend .Release.Namespace .Values.clusterDomain }}
{{- end }}
{{- end }}

{{/* SPECDEC_AUTH_TOKEN from auth.secretName, as an EnvVar list item; empty without a Secret. */}}
{{- define "specdec.authTokenEnv" -}}
{{- with .Values.auth.secretName }}
- name: SPECDEC_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.auth.secretKey | quote }}
{{- end }}
{{- end }}

{{- define "specdec.tlsSecretName" -}}
{{- default .root.Values.tls.secretName (index .root.Values.tls.secretNames .key) }}
{{- end }}

{{/* Fail early, in words that say what to fix, on value combinations that cannot work. */}}
{{- define "specdec.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.discovery.mode (list "dns" "kubernetes" "static")) }}
{{- fail (printf "discovery.mode must be dns, kubernetes or static (got %q)" $v.discovery.mode) }}
{{- end }}
{{- if and (eq $v.discovery.mode "static") (empty $v.discovery.static.target) }}
{{- fail "discovery.mode=static needs discovery.static.target: a list of host:port target-worker addresses" }}
{{- end }}
{{- if and (ne $v.discovery.mode "static") (not $v.targetWorker.enabled) }}
{{- fail "targetWorker.enabled=false leaves the coordinator without targets: enable it, or use discovery.mode=static with discovery.static.target" }}
{{- end }}
{{- if and $v.tracing.jaeger.enabled $v.tracing.tempo.enabled }}
{{- fail "tracing.jaeger.enabled and tracing.tempo.enabled are exclusive: pick one trace backend" }}
{{- end }}
{{- if not (has $v.models.volume.type (list "emptyDir" "pvc" "hostPath")) }}
{{- fail (printf "models.volume.type must be emptyDir, pvc or hostPath (got %q)" $v.models.volume.type) }}
{{- end }}
{{- if and $v.models.readOnly $v.models.fetch.enabled }}
{{- fail "models.readOnly=true cannot be combined with models.fetch.enabled=true: the fetch writes into the volume" }}
{{- end }}
{{- if $v.tls.enabled }}
{{- range $key := list "coordinator" "draftWorker" "targetWorker" }}
{{- if not (include "specdec.tlsSecretName" (dict "root" $ "key" $key)) }}
{{- fail (printf "tls.enabled=true needs tls.secretName (or tls.secretNames.%s): a Secret with ca.crt, tls.crt and tls.key" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := list "coordinator" "draftWorker" "targetWorker" "gateway" }}
{{- $comp := index $v $key }}
{{- if and $comp.graceSeconds (ge (float64 $comp.graceSeconds) (float64 $comp.terminationGracePeriodSeconds)) }}
{{- fail (printf "%s.graceSeconds (%v) must be below %s.terminationGracePeriodSeconds (%v), or the kubelet kills the drain" $key $comp.graceSeconds $key $comp.terminationGracePeriodSeconds) }}
{{- end }}
{{- end }}
{{- range $key := list "coordinator" "draftWorker" }}
{{- $as := (index $v $key).autoscaling }}
{{- if and $as.enabled $as.targetCPUUtilizationPercentage (not (dig "requests" "cpu" "" (default (dict) (index $v $key).resources))) }}
{{- fail (printf "%s.autoscaling targets CPU utilisation, which needs %s.resources.requests.cpu" $key $key) }}
{{- end }}
{{- end }}
{{- end }}
