{{/*
One Deployment template for the three components; each component file calls it with
(dict "root" $ "key" "coordinator" | "draftWorker" | "targetWorker").
*/}}

{{/* `specdec serve <subcommand>` of a component. */}}
{{- define "specdec.serveCommand" -}}
{{- get (dict "coordinator" "coordinator" "draftWorker" "draft" "targetWorker" "target") . }}
{{- end }}

{{/* Command-line arguments after the image's `specdec` entrypoint. */}}
{{- define "specdec.args" -}}
{{- $root := .root }}
{{- $comp := index $root.Values .key }}
- serve
- {{ include "specdec.serveCommand" .key }}
- --host
- {{ $root.Values.listenHost | quote }}
- --port
- {{ $comp.port | toString | quote }}
{{- with $root.Values.preset }}
- --preset
- {{ . | quote }}
{{- end }}
{{- /* Worker flags, rendered only when set so that the services' defaults apply. */}}
{{- $flags := list (list "model" "--model") (list "deviceMap" "--device-map") (list "dtype" "--dtype") (list "threads" "--threads") (list "costProfile" "--cost-profile") (list "maxSessions" "--max-sessions") (list "sessionTtl" "--session-ttl") (list "proposalTopN" "--proposal-top-n") (list "maxConcurrentRequests" "--max-concurrent-requests") (list "targetRetrySeconds" "--target-retry-s") (list "graceSeconds" "--grace") }}
{{- range $flags }}
{{- $value := index $comp (index . 0) }}
{{- if $value }}
- {{ index . 1 }}
- {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- if eq .key "coordinator" }}
{{- with include "specdec.workerAddresses" (dict "root" $root "key" "draftWorker") }}
- --draft
- {{ . | quote }}
{{- end }}
{{- with include "specdec.workerAddresses" (dict "root" $root "key" "targetWorker") }}
- --target
- {{ . | quote }}
{{- end }}
{{- end }}
{{- if $root.Values.tls.enabled }}
- --tls-cert
- {{ printf "%s/tls.crt" $root.Values.tls.mountPath | quote }}
- --tls-key
- {{ printf "%s/tls.key" $root.Values.tls.mountPath | quote }}
- --tls-ca
- {{ printf "%s/ca.crt" $root.Values.tls.mountPath | quote }}
{{- end }}
{{- range $comp.extraArgs }}
- {{ . | toString | quote }}
{{- end }}
{{- end }}

{{/* One probe: native gRPC health check, or with TLS an exec of files/grpc_health_probe.py
(kubelet's gRPC probe speaks plaintext only). Call with (dict "ctx" . "timing" <map>). */}}
{{- define "specdec.probe" -}}
{{- $root := .ctx.root }}
{{- $comp := index $root.Values .ctx.key }}
{{- if $root.Values.tls.enabled }}
exec:
  command:
    - python
    - /etc/specdec/probe/grpc_health_probe.py
    - --port
    - {{ $comp.port | toString | quote }}
    - --service
    - {{ $comp.probes.grpcService | quote }}
    - --server-name
    - {{ include "specdec.serviceHost" .ctx | quote }}
    - --tls-dir
    - {{ $root.Values.tls.mountPath | quote }}
{{- else }}
grpc:
  port: {{ $comp.port }}
  service: {{ $comp.probes.grpcService | quote }}
{{- end }}
{{ toYaml .timing }}
{{- end }}

{{- define "specdec.modelsVolume" -}}
{{- $m := .Values.models }}
- name: models
{{- if eq $m.volume.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-models" (include "specdec.fullname" .)) $m.volume.pvc.existingClaim }}
    readOnly: {{ $m.readOnly }}
{{- else if eq $m.volume.type "hostPath" }}
  hostPath:
    path: {{ $m.volume.hostPath.path }}
    type: {{ $m.volume.hostPath.type }}
{{- else }}
  emptyDir:
    {{- with $m.volume.emptyDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "specdec.deployment" -}}
{{- $root := .root }}
{{- $key := .key }}
{{- $comp := index $root.Values $key }}
{{- $name := include "specdec.componentFullname" . }}
{{- $models := $root.Values.models }}
{{- $fetch := and $models.fetch.enabled (has $key $models.fetch.components) }}
{{- $autoscaled := dig "autoscaling" "enabled" false $comp }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "specdec.componentLabels" . | nindent 4 }}
spec:
  {{- if not $autoscaled }}
  replicas: {{ $comp.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  {{- with $comp.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "specdec.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "specdec.componentSelectorLabels" . | nindent 8 }}
        {{- with $comp.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if and $root.Values.metrics.enabled $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $root.Values.metrics.port | toString | quote }}
        prometheus.io/path: {{ $root.Values.metrics.path | quote }}
        {{- end }}
        {{- with $comp.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- if eq $key "coordinator" }}
      serviceAccountName: {{ include "specdec.coordinatorServiceAccountName" $root }}
      # The API token is needed only to watch EndpointSlices (discovery.mode=kubernetes).
      automountServiceAccountToken: {{ eq $root.Values.discovery.mode "kubernetes" }}
      {{- else }}
      serviceAccountName: {{ include "specdec.workerServiceAccountName" $root }}
      automountServiceAccountToken: false
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $comp.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $comp.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if $fetch }}
      initContainers:
        - name: fetch-models
          image: {{ include "specdec.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - models
            - fetch
            - --cache-dir
            - {{ $models.cacheDir | quote }}
            {{- range $models.fetch.extraArgs }}
            - {{ . | toString | quote }}
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "specdec.fullname" $root }}-config
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $models.fetch.resources | nindent 12 }}
          volumeMounts:
            - name: models
              mountPath: {{ $models.cacheDir }}
      {{- end }}
      containers:
        - name: {{ include "specdec.componentName" $key }}
          image: {{ include "specdec.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- include "specdec.args" . | trim | nindent 12 }}
          ports:
            - name: grpc
              containerPort: {{ $comp.port }}
              protocol: TCP
            {{- if $root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "specdec.fullname" $root }}-config
            {{- with $comp.envFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: POD_IP
              valueFrom: {fieldRef: {fieldPath: status.podIP}}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "specdec-%s" (include "specdec.componentName" $key) | quote }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),service.instance.id=$(POD_NAME)"
            {{- with and (eq $key "coordinator") (include "specdec.authTokenEnv" $root | trim) }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $comp.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            {{- include "specdec.probe" (dict "ctx" . "timing" $comp.probes.startup) | trim | nindent 12 }}
          livenessProbe:
            {{- include "specdec.probe" (dict "ctx" . "timing" $comp.probes.liveness) | trim | nindent 12 }}
          readinessProbe:
            {{- include "specdec.probe" (dict "ctx" . "timing" $comp.probes.readiness) | trim | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          {{- $resources := deepCopy (default (dict) $comp.resources) }}
          {{- if gt (int $comp.gpu.count) 0 }}
          {{- $gpu := dict $comp.gpu.resourceName (int $comp.gpu.count) }}
          {{- $_ := set $resources "requests" (merge (default (dict) $resources.requests) $gpu) }}
          {{- $_ := set $resources "limits" (merge (default (dict) $resources.limits) $gpu) }}
          {{- end }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          volumeMounts:
            - name: models
              mountPath: {{ $models.cacheDir }}
              readOnly: {{ $models.readOnly }}
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: {{ $root.Values.tls.mountPath }}
              readOnly: true
            - name: probe
              mountPath: /etc/specdec/probe
              readOnly: true
            {{- end }}
            {{- if $comp.shmSize }}
            - name: dshm
              mountPath: /dev/shm
            {{- end }}
      volumes:
        {{- include "specdec.modelsVolume" $root | trim | nindent 8 }}
        {{- if $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ include "specdec.tlsSecretName" . }}
            defaultMode: 0440
        - name: probe
          configMap:
            name: {{ include "specdec.fullname" $root }}-probe
        {{- end }}
        {{- if $comp.shmSize }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $comp.shmSize }}
        {{- end }}
      {{- with $comp.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $comp.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $comp.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $comp.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
