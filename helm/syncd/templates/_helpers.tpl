{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "syncd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or just <release> when it already contains the chart name. */}}
{{- define "syncd.fullname" -}}
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

{{- define "syncd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "syncd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "syncd.labels" -}}
helm.sh/chart: {{ include "syncd.chart" . }}
{{ include "syncd.selectorLabels" . }}
app.kubernetes.io/version: {{ include "syncd.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: syncd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "syncd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "syncd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "syncd.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | trunc 63 }}
{{- end }}

{{- define "syncd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap holding config.yaml, and the key inside it. */}}
{{- define "syncd.configMapName" -}}
{{- default (include "syncd.fullname" .) .Values.existingConfigMap }}
{{- end }}
{{- define "syncd.configMapKey" -}}
{{- if .Values.existingConfigMap }}{{ .Values.existingConfigMapKey }}{{ else }}config.yaml{{ end }}
{{- end }}

{{/* The config file as rendered by the chart: configFile verbatim, else `config` as YAML. */}}
{{- define "syncd.configFile" -}}
{{- if .Values.configFile }}
{{- .Values.configFile }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{- define "syncd.secretName" -}}
{{- default (include "syncd.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Data of the chart-created Secret: only the non-empty entries of .Values.secrets. */}}
{{- define "syncd.secretData" -}}
{{- range $field, $key := .Values.secretKeys }}
{{- $value := get $.Values.secrets $field }}
{{- if $value }}
{{ $key }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Kafka bootstrap servers and group id, from the keda block or the config map. */}}
{{- define "syncd.kafkaBootstrap" -}}
{{- $kafka := get (.Values.config | default dict) "kafka" | default dict }}
{{- default (get $kafka "bootstrap_servers") .Values.keda.bootstrapServers }}
{{- end }}
{{- define "syncd.kafkaGroup" -}}
{{- $kafka := get (.Values.config | default dict) "kafka" | default dict }}
{{- default (default "syncd" (get $kafka "group_id")) .Values.keda.consumerGroup }}
{{- end }}

{{/*
The `job` label of syncd's series as the chart's ServiceMonitor scrapes them: it sets no
jobLabel, so prometheus-operator uses the metrics Service's name -- the full name.
*/}}
{{- define "syncd.job" -}}
{{- include "syncd.fullname" . }}
{{- end }}

{{/* PromQL matchers selecting this release's series in the alert rules. */}}
{{- define "syncd.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "syncd.job" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Stops rendering with a message. `helm lint` only logs `fail` (as INFO) and carries on, so the
helper also emits a line that is not YAML: lint then reports the template as unparseable and
fails, printing the message just before. `helm template` / `install` never get that far.
*/}}
{{- define "syncd.fail" -}}
{{- fail . }}
{{ printf "invalid values: %s" . | quote }}: [
{{- end }}

{{/* Cross-field checks a JSON schema cannot express. */}}
{{- define "syncd.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (add (int .Values.drainDeadlineSeconds) 9 | int) }}
{{- include "syncd.fail" (printf "terminationGracePeriodSeconds (%v) must exceed drainDeadlineSeconds (%v) by at least 10 s, or Kubernetes kills syncd before it commits and leaves the consumer group" .Values.terminationGracePeriodSeconds .Values.drainDeadlineSeconds) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.maxReplicaCount) (int .Values.keda.partitionCount)) }}
{{- include "syncd.fail" (printf "keda.maxReplicaCount (%v) exceeds keda.partitionCount (%v): consumers beyond the partition count sit idle" .Values.keda.maxReplicaCount .Values.keda.partitionCount) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- include "syncd.fail" "keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- if and .Values.keda.enabled (not (include "syncd.kafkaBootstrap" .)) }}
{{- include "syncd.fail" "keda.enabled needs keda.bootstrapServers (or config.kafka.bootstrap_servers)" }}
{{- end }}
{{- if and .Values.configFile .Values.existingConfigMap }}
{{- include "syncd.fail" "set either configFile or existingConfigMap, not both" }}
{{- end }}
{{- include "syncd.validateConfig" . }}
{{- if and .Values.existingSecret (ne (len (include "syncd.secretData" . | trim)) 0) }}
{{- include "syncd.fail" "secrets.* values are ignored when existingSecret is set; put them into that Secret instead" }}
{{- end }}
{{- end }}

{{/*
The config the chart renders must name the issuing company (`seller`) and map at least one
ERP table to invoices (`documents`): syncd refuses to start without them, so a default
install would only crash-loop. The content of an existingConfigMap is not visible here.
*/}}
{{- define "syncd.validateConfig" -}}
{{- if not .Values.existingConfigMap }}
{{- $source := "config" }}
{{- $config := .Values.config | default dict }}
{{- if .Values.configFile }}
{{- $source = "configFile" }}
{{- $config = fromYaml .Values.configFile }}
{{- if hasKey $config "Error" }}
{{- include "syncd.fail" (printf "configFile is not a YAML mapping: %v" (get $config "Error")) }}
{{- end }}
{{- end }}
{{- $missing := list }}
{{- /* with issuers: (one account per company) each account carries its seller */}}
{{- if not (or (get $config "seller") (get $config "issuers")) }}
{{- $missing = append $missing "seller" }}
{{- end }}
{{- if not (get $config "documents") }}
{{- $missing = append $missing "documents" }}
{{- end }}
{{- if $missing }}
{{- include "syncd.fail" (printf "the syncd config (values: %s) has no %s: syncd would refuse to start and the pods would crash-loop. Give the DBAs' document config: config.seller and config.documents (docs/configuration.md, config/example.yaml), their reviewed file with --set-file configFile=<file>, or existingConfigMap" $source (join " and no " $missing)) }}
{{- end }}
{{- end }}
{{- end }}
