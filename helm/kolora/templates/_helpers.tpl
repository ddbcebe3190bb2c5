{{/* Chart name, overridable with nameOverride, capped at 63 characters (DNS label). */}}
{{- define "kolora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, prefixed to the chart name unless it contains it. */}}
{{- define "kolora.fullname" -}}
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

{{/* Chart name and version, as the helm.sh/chart label wants them. */}}
{{- define "kolora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels Helm adds to the Argo objects hera rendered (which carry the app name/version labels themselves). */}}
{{- define "kolora.releaseLabels" -}}
helm.sh/chart: {{ include "kolora.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Common labels of the chart's own objects. */}}
{{- define "kolora.labels" -}}
app.kubernetes.io/name: {{ include "kolora.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "kolora.releaseLabels" . }}
{{- end }}

{{/* ServiceAccount of the workflow pods: created (default <fullname>-workflow) or given; "" = the namespace default. */}}
{{- define "kolora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-workflow" (include "kolora.fullname" .) | trunc 63 | trimSuffix "-") .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Token Secret of the created workflow ServiceAccount, <account>-token as workflows/rbac.py names it: a renamed account gets its own (Kubernetes deletes a token Secret whose account is gone). */}}
{{- define "kolora.tokenSecretName" -}}
{{- printf "%s-token" (include "kolora.serviceAccountName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the Role and RoleBinding of the workflow ServiceAccount. */}}
{{- define "kolora.workflowRoleName" -}}
{{- printf "%s-workflow" (include "kolora.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret holding the S3 credentials: s3.existingSecret, or the one the chart creates. */}}
{{- define "kolora.s3SecretName" -}}
{{- default (printf "%s-s3" (include "kolora.fullname" .) | trunc 63 | trimSuffix "-") .Values.s3.existingSecret }}
{{- end }}

{{/* Secret of the release store's keys (champion, promote): s3.existingSecret, the chart's own, or "" = the file's (the quick-start's). */}}
{{- define "kolora.storeSecret" -}}
{{- if or .Values.s3.existingSecret .Values.artifactRepository.create }}
{{- include "kolora.s3SecretName" . }}
{{- end }}
{{- end }}

{{/* Release-store parameter defaults from the s3 values that are set (YAML map): an *.amazonaws.com endpoint is "" (AWS's own endpoint of the region). */}}
{{- define "kolora.storeParameters" -}}
{{- $s3 := .Values.s3 }}
{{- with $s3.endpoint }}
{{- if hasSuffix ".amazonaws.com" (first (splitList ":" .)) }}
s3-endpoint: ""
{{- else }}
s3-endpoint: {{ printf "%s://%s" (ternary "http" "https" $s3.insecure) . | quote }}
{{- end }}
{{- end }}
{{- with $s3.bucket }}
s3-bucket: {{ . | quote }}
{{- end }}
{{- with $s3.region }}
s3-region: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Loads one Argo object rendered by hera from files/ (a copy of workflows/dist/, kept equal by the tests) as data. */}}
{{- define "kolora.argoObject" -}}
{{- $text := required (printf "%s is missing from the chart (make render copies it from workflows/dist/)" .file) (.root.Files.Get .file) }}
{{- $obj := fromYaml $text }}
{{- if hasKey $obj "Error" }}
{{- fail (printf "%s does not parse as YAML: %s" .file $obj.Error) }}
{{- end }}
{{- toYaml $obj }}
{{- end }}

{{/* Sets what the release adds to a hera object's metadata (dict root metadata), in place: namespace, the Helm release labels, appVersion. */}}
{{- define "kolora.releaseMetadata" -}}
{{- $_ := set .metadata "namespace" .root.Release.Namespace }}
{{- $_ = set .metadata "labels" (merge (include "kolora.releaseLabels" .root | fromYaml) (default dict .metadata.labels)) }}
{{- include "kolora.versionLabel" (dict "root" .root "labels" .metadata.labels) }}
{{- end }}

{{/* Sets app.kubernetes.io/version to the chart's appVersion in a labels map that has it (dict root labels), in place. */}}
{{- define "kolora.versionLabel" -}}
{{- if and .labels (hasKey .labels "app.kubernetes.io/version") }}
{{- $_ := set .labels "app.kubernetes.io/version" .root.Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Sets the default value of each named workflow parameter (dict parameters values), in place; other parameters keep hera's. */}}
{{- define "kolora.parameterDefaults" -}}
{{- range .parameters }}
{{- if hasKey $.values .name }}
{{- $_ := set . "value" (get $.values .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Applies the values to one container template of the pipeline (dict root step), in place: pull policy, size and deadline, GPU placement, /dev/shm, the Secrets its env reads (no store keys with s3.useSDKCreds). */}}
{{- define "kolora.step" -}}
{{- $values := .root.Values }}
{{- $step := .step }}
{{- $container := $step.container }}
{{- $gpuStep := hasKey (default dict (default dict $container.resources).limits) "nvidia.com/gpu" }}
{{- $_ := set $container "imagePullPolicy" $values.image.pullPolicy }}
{{- $_ = unset $step "tolerations" }}
{{- $_ = unset $step "nodeSelector" }}
{{- if $values.gpu.enabled }}
{{- $size := required (printf "stages.%s is missing from the values" $step.name) (index $values.stages $step.name) }}
{{- $resources := deepCopy (default dict $size.resources) }}
{{- if $gpuStep }}
{{- $_ = set $resources "limits" (merge (dict "nvidia.com/gpu" (toString (int64 $values.gpu.count))) (default dict $resources.limits)) }}
{{- with $values.gpu.tolerations }}
{{- $_ = set $step "tolerations" (deepCopy .) }}
{{- end }}
{{- with $values.gpu.nodeSelector }}
{{- $_ = set $step "nodeSelector" (deepCopy .) }}
{{- end }}
{{- end }}
{{- $_ = set $container "resources" $resources }}
{{- $_ = set $step "activeDeadlineSeconds" (int64 $size.activeDeadlineSeconds) }}
{{- else }}
{{- $_ = set $container "resources" (deepCopy $values.cpuOnly.resources) }}
{{- $_ = set $step "activeDeadlineSeconds" (int64 $values.cpuOnly.activeDeadlineSeconds) }}
{{- end }}
{{- range $step.volumes }}
{{- if and .emptyDir (eq (default "" .emptyDir.medium) "Memory") }}
{{- $_ = set .emptyDir "sizeLimit" (ternary $values.gpu.shmSize $values.cpuOnly.shmSize $values.gpu.enabled) }}
{{- end }}
{{- end }}
{{- $store := include "kolora.storeSecret" .root }}
{{- $secrets := dict
  "MODELSCOPE_API_TOKEN" (list $values.models.tokenSecret.name $values.models.tokenSecret.key)
  "AWS_ACCESS_KEY_ID" (list $store $values.s3.secretKeys.accessKey)
  "AWS_SECRET_ACCESS_KEY" (list $store $values.s3.secretKeys.secretKey) }}
{{- $env := list }}
{{- range $container.env }}
{{- $storeKey := hasPrefix "AWS_" .name }}
{{- if and .valueFrom .valueFrom.secretKeyRef (hasKey $secrets .name) }}
{{- $ref := get $secrets .name }}
{{- $_ = set .valueFrom.secretKeyRef "name" (default .valueFrom.secretKeyRef.name (index $ref 0)) }}
{{- $_ = set .valueFrom.secretKeyRef "key" (index $ref 1) }}
{{- end }}
{{- if not (and $storeKey $values.s3.useSDKCreds) }}
{{- $env = append $env . }}
{{- end }}
{{- end }}
{{- if $container.env }}
{{- $_ = set $container "env" $env }}
{{- end }}
{{- end }}

{{/* artifactRepositoryRef of the pipeline: set when artifactRepository.reference, else the namespace default (only read from artifact-repositories). */}}
{{- define "kolora.artifactRepositoryRef" -}}
{{- $repo := .Values.artifactRepository }}
{{- if $repo.reference }}
configMap: {{ $repo.configMap | quote }}
{{- with $repo.key }}
key: {{ . | quote }}
{{- end }}
{{- else if ne $repo.configMap "artifact-repositories" }}
{{- fail "artifactRepository.configMap is not artifact-repositories: Argo only reads the namespace default from that one; set artifactRepository.reference=true" }}
{{- end }}
{{- end }}

{{/* Fails with a message when artifactRepository.create lacks the S3 endpoint or bucket (prints nothing). */}}
{{- define "kolora.validateS3" -}}
{{- if .Values.artifactRepository.create }}
{{- $_ := required "s3.endpoint (host:port) is required when artifactRepository.create is true" .Values.s3.endpoint }}
{{- $_ = required "s3.bucket is required when artifactRepository.create is true" .Values.s3.bucket }}
{{- end }}
{{- end }}
