{{/*
Names: fixed, the same as rescue/deploy/*.yaml (values.yaml says why).
*/}}
{{- define "blackstart-rescue.controllerName" -}}rescue-controller{{- end }}
{{- define "blackstart-rescue.agentName" -}}rescue-agent{{- end }}
{{- define "blackstart-rescue.controllerRole" -}}blackstart-rescue-controller{{- end }}
{{- define "blackstart-rescue.agentRole" -}}blackstart-rescue-agent{{- end }}
{{- define "blackstart-rescue.decisionApiName" -}}rescue-controller-decision-api{{- end }}

{{/* Where the controller reads the decision API's token, TLS pair and webhook token. */}}
{{- define "blackstart-rescue.decisionApiTokenDir" -}}/etc/blackstart/decision-api{{- end }}
{{- define "blackstart-rescue.decisionApiTlsDir" -}}/etc/blackstart/decision-api-tls{{- end }}
{{- define "blackstart-rescue.webhookTokenDir" -}}/etc/blackstart/webhook{{- end }}

{{/* The Secret holding the decision API's token: the user's, or the chart's. */}}
{{- define "blackstart-rescue.decisionApiSecret" -}}
{{- .Values.controller.decisionApi.existingSecret | default (include "blackstart-rescue.decisionApiName" .) }}
{{- end }}

{{/* Labels on every object the chart makes. */}}
{{- define "blackstart-rescue.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: blackstart
{{- end }}

{{/* Selector labels; the same as rescue/deploy/*.yaml, as selectors cannot change later. */}}
{{- define "blackstart-rescue.controllerSelector" -}}
app.kubernetes.io/name: blackstart-rescue
app.kubernetes.io/component: controller
{{- end }}
{{- define "blackstart-rescue.agentSelector" -}}
app.kubernetes.io/name: rescue-agent
{{- end }}

{{/*
The image of one component: its own repository/tag when set, else the shared ones;
the tag defaults to the chart's appVersion.
Call with (dict "component" .Values.controller.image "root" .).
*/}}
{{- define "blackstart-rescue.image" -}}
{{- $repository := .component.repository | default (printf "%s%s" .root.Values.image.repositoryPrefix .name) }}
{{- $tag := .component.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/*
"true" when the agent's ValidatingAdmissionPolicy is rendered: asked for, and the
cluster puts the node name in service account tokens (Kubernetes 1.32, the same
check as `blackstart rescue install`).
*/}}
{{- define "blackstart-rescue.admissionPolicy" -}}
{{- if and .Values.agent.enabled .Values.agent.admissionPolicy.enabled (semverCompare ">=1.32.0-0" .Capabilities.KubeVersion.Version) -}}
true
{{- end }}
{{- end }}

{{/* Values the schema cannot check alone: fail with what to set. */}}
{{- define "blackstart-rescue.validate" -}}
{{- if and (eq .Values.controller.rebootDriver "webhook") (not .Values.controller.webhook.url) }}
{{- fail "controller.rebootDriver is webhook but controller.webhook.url is empty: set controller.webhook.url to the URL the reboot requests are POSTed to" }}
{{- end }}
{{- if and .Values.controller.decisionApi.token .Values.controller.decisionApi.existingSecret }}
{{- fail "set controller.decisionApi.token or controller.decisionApi.existingSecret, not both" }}
{{- end }}
{{- end }}
