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

{{/* Labels Helm adds to the generated Argo objects (which carry the app name/version labels themselves). */}}
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

{{/* Name of the Role and RoleBinding of the workflow ServiceAccount. */}}
{{- define "kolora.workflowRoleName" -}}
{{- printf "%s-workflow" (include "kolora.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret holding the S3 credentials: s3.existingSecret, or the one the chart creates. */}}
{{- define "kolora.s3SecretName" -}}
{{- default (printf "%s-s3" (include "kolora.fullname" .) | trunc 63 | trimSuffix "-") .Values.s3.existingSecret }}
{{- end }}

{{/* Requests/limits of one step (dict root stage gpu): stages.<stage>.resources plus nvidia.com/gpu on GPU steps, or cpuOnly.resources without GPUs. */}}
{{- define "kolora.stageResources" -}}
{{- $values := .root.Values }}
{{- if $values.gpu.enabled }}
{{- $stage := required (printf "stages.%s is missing from the values (run make helm-render?)" .stage) (index $values.stages .stage) }}
{{- $resources := deepCopy (default dict $stage.resources) }}
{{- if .gpu }}
{{- $limits := merge (dict "nvidia.com/gpu" (toString (int64 $values.gpu.count))) (default dict $resources.limits) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- toYaml $resources }}
{{- else }}
{{- toYaml $values.cpuOnly.resources }}
{{- end }}
{{- end }}

{{/* activeDeadlineSeconds of one step (dict root stage): stages.<stage> with GPUs, cpuOnly without. */}}
{{- define "kolora.stageDeadline" -}}
{{- $values := .root.Values }}
{{- if $values.gpu.enabled }}
{{- $stage := required (printf "stages.%s is missing from the values (run make helm-render?)" .stage) (index $values.stages .stage) }}
{{- int64 $stage.activeDeadlineSeconds }}
{{- else }}
{{- int64 $values.cpuOnly.activeDeadlineSeconds }}
{{- end }}
{{- end }}

{{/* Size of the memory-backed /dev/shm of the GPU stages' steps (quoted). */}}
{{- define "kolora.shmSize" -}}
{{- ternary .Values.gpu.shmSize .Values.cpuOnly.shmSize .Values.gpu.enabled | quote }}
{{- end }}

{{/* Fails with a message when artifactRepository.create lacks the S3 endpoint or bucket (prints nothing). */}}
{{- define "kolora.validateS3" -}}
{{- if .Values.artifactRepository.create }}
{{- $_ := required "s3.endpoint (host:port) is required when artifactRepository.create is true" .Values.s3.endpoint }}
{{- $_ = required "s3.bucket is required when artifactRepository.create is true" .Values.s3.bucket }}
{{- end }}
{{- end }}
