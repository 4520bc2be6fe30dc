{{/*
Named templates of the mcache chart. The first group serves this chart's own objects; the last
two (mcache.initContainer, mcache.initVolumes) are for inference charts that add the
`mcache init` init container to their pods (see the comment there and examples/).
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "mcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified name: fullnameOverride, else RELEASE-NAME (or RELEASE when it already holds
the chart's name), cut to 63 characters (the DNS label limit of some name fields).
*/}}
{{- define "mcache.fullname" -}}
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

{{/* NAME-VERSION for the helm.sh/chart label. */}}
{{- define "mcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "mcache.labels" -}}
helm.sh/chart: {{ include "mcache.chart" . }}
{{ include "mcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the chart's pods (a component label is added per DaemonSet). */}}
{{- define "mcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "mcache.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := toString (.Values.image.tag | default .Chart.AppVersion) }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: pin a version (or set image.digest), not latest" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* MCACHE_DIR inside the pods: the mount itself (hostPath), or a subdirectory of a claim. */}}
{{- define "mcache.cacheDir" -}}
{{- if .Values.cache.existingClaim }}
{{- printf "%s/mcache" .Values.cache.mountPath }}
{{- else }}
{{- .Values.cache.mountPath }}
{{- end }}
{{- end }}

{{/* The seccomp profile: RuntimeDefault, or the Localhost profile that allows io_uring. */}}
{{- define "mcache.seccompProfile" -}}
{{- if .Values.seccomp.ioUring -}}
type: Localhost
localhostProfile: {{ .Values.seccomp.localhostProfile }}
{{- else -}}
type: RuntimeDefault
{{- end }}
{{- end }}

{{/* Pod-level securityContext. */}}
{{- define "mcache.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
seccompProfile:
  {{- include "mcache.seccompProfile" . | nindent 2 }}
{{- end }}

{{/* Environment and envFrom shared by every mcache container of the chart. */}}
{{- define "mcache.env" -}}
env:
  - name: MCACHE_DIR
    value: {{ include "mcache.cacheDir" . | quote }}
  {{- with .Values.budget.maxBytes }}
  - name: MCACHE_MAX_BYTES
    value: {{ . | quote }}
  {{- end }}
  {{- if .Values.cache.allowSharedDir }}
  - name: MCACHE_ALLOW_SHARED_DIR
    value: "1"
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.credentials.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* Scheduling and pod-level settings shared by both DaemonSets. */}}
{{- define "mcache.podCommon" -}}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "mcache.podSecurityContext" . | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The optional root init container that hands a fresh hostPath cache directory to the pods' user
(cache.prepare). busybox's chown, no shell: the command is one exec.
*/}}
{{- define "mcache.prepareContainer" -}}
{{- if and .Values.cache.prepare.enabled (not .Values.cache.existingClaim) -}}
- name: prepare-cache
  image: "{{ .Values.cache.prepare.image.repository }}:{{ .Values.cache.prepare.image.tag }}"
  imagePullPolicy: {{ .Values.cache.prepare.image.pullPolicy }}
  command:
    - chown
    - "{{ .Values.podSecurityContext.runAsUser }}:{{ .Values.podSecurityContext.runAsGroup }}"
    - {{ .Values.cache.mountPath | quote }}
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop:
        - ALL
      add:
        - CHOWN
  volumeMounts:
    - name: cache
      mountPath: {{ .Values.cache.mountPath }}
{{- end }}
{{- end }}

{{/* The cache volume: hostPath or an existing claim. */}}
{{- define "mcache.cacheVolume" -}}
- name: cache
{{- if .Values.cache.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.cache.existingClaim }}
{{- else }}
  hostPath:
    path: {{ .Values.cache.hostPath.path }}
    type: {{ .Values.cache.hostPath.type }}
{{- end }}
{{- end }}

{{/*
mcache.initContainer: the `mcache init` init container of an inference pod, replacing the
`wget` one. It renders one item of spec.initContainers; pair it with mcache.initVolumes when
`manifestConfigMap` or `cacheHostPath` is set. Use it from your own chart (this chart as a
dependency makes the template available there):

  initContainers:
    {{- include "mcache.initContainer" (dict "image" "ghcr.io/mcache/mcache:0.1.0") | nindent 4 }}

Parameters (a dict; only image is required):
  image              the mcache image reference (pinned)
  name               container name (default "model-download", the seed's)
  volume             pod volume mounted at target (default "model-cache")
  target             MCACHE_TARGET, where the models land (default "/models"); the main container
                     mounts the same volume there
  secretName         Secret with the model URL for MODEL_URL (default "model-credentials")
  secretKey          its key (default "url")
  manifestConfigMap  a ConfigMap holding models.yaml: manifest mode (MCACHE_MANIFEST) instead of
                     MODEL_URL; each model lands at TARGET/NAME/
  cacheHostPath      a node directory for a node-wide cache shared with the prewarm DaemonSet
                     (MCACHE_DIR=/var/cache/mcache); default: the cache is TARGET/.mcache
  originSecret       a Secret with AWS_* / HF_* keys, imported with envFrom
  maxBytes           MCACHE_MAX_BYTES, the cache budget
  offline            true: MCACHE_OFFLINE=1, no origin check when the cache holds the model
  ioUring            true: the Localhost seccomp profile that allows io_uring
  localhostProfile   that profile's path (default "profiles/mcache-io-uring.json")
  resources          the container's resources (default: requests cpu 500m, memory 256Mi;
                     limit memory 1Gi)
*/}}
{{- define "mcache.initContainer" -}}
{{- $target := .target | default "/models" -}}
- name: {{ .name | default "model-download" }}
  image: {{ required "mcache.initContainer: image is required" .image }}
  args:
    - init
  env:
    - name: MCACHE_TARGET
      value: {{ $target | quote }}
    {{- if .manifestConfigMap }}
    - name: MCACHE_MANIFEST
      value: /etc/mcache/models.yaml
    {{- else }}
    - name: MODEL_URL
      valueFrom:
        secretKeyRef:
          name: {{ .secretName | default "model-credentials" }}
          key: {{ .secretKey | default "url" }}
    {{- end }}
    {{- if .cacheHostPath }}
    - name: MCACHE_DIR
      value: /var/cache/mcache
    {{- end }}
    {{- with .maxBytes }}
    - name: MCACHE_MAX_BYTES
      value: {{ . | quote }}
    {{- end }}
    {{- if .offline }}
    - name: MCACHE_OFFLINE
      value: "1"
    {{- end }}
  {{- with .originSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  resources:
    {{- if .resources }}
    {{- toYaml .resources | nindent 4 }}
    {{- else }}
    requests:
      cpu: 500m
      memory: 256Mi
    limits:
      memory: 1Gi
    {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop:
        - ALL
    seccompProfile:
      {{- if .ioUring }}
      type: Localhost
      localhostProfile: {{ .localhostProfile | default "profiles/mcache-io-uring.json" }}
      {{- else }}
      type: RuntimeDefault
      {{- end }}
  volumeMounts:
    - name: {{ .volume | default "model-cache" }}
      mountPath: {{ $target }}
    {{- if .manifestConfigMap }}
    - name: mcache-models
      mountPath: /etc/mcache
      readOnly: true
    {{- end }}
    {{- if .cacheHostPath }}
    - name: mcache-node-cache
      mountPath: /var/cache/mcache
    {{- end }}
{{- end }}

{{/*
mcache.initVolumes: the pod volumes mcache.initContainer needs beyond `volume` (same dict):

  volumes:
    - name: model-cache
      persistentVolumeClaim:
        claimName: model-cache
    {{- include "mcache.initVolumes" $params | nindent 4 }}
*/}}
{{- define "mcache.initVolumes" -}}
{{- if .manifestConfigMap }}
- name: mcache-models
  configMap:
    name: {{ .manifestConfigMap }}
{{- end }}
{{- if .cacheHostPath }}
- name: mcache-node-cache
  hostPath:
    path: {{ .cacheHostPath }}
    type: Directory
{{- end }}
{{- end }}
