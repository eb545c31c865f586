{{/* The image of the controller and the webhook. */}}
{{- define "hostport.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The publisher's image. */}}
{{- define "hostport.publisherImage" -}}
{{ .Values.publisher.image.repository }}:{{ .Values.publisher.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels of a component's objects and pods (name: hostport-<component>). */}}
{{- define "hostport.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: hostport-allocator
{{- end -}}

{{/* Helm's own labels, beside ours, on every object. */}}
{{- define "hostport.releaseLabels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The controller's user name: the allocator identity the validating webhooks skip. */}}
{{- define "hostport.controllerUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:hostport-controller
{{- end -}}

{{/* Scheduling of a component: nodeSelector, tolerations, affinity, priorityClassName. */}}
{{- define "hostport.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The security context every container of ours runs with. */}}
{{- define "hostport.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
readOnlyRootFilesystem: true
{{- end -}}

{{- define "hostport.podSecurity" -}}
runAsGroup: 65532
runAsNonRoot: true
runAsUser: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* /healthz and /readyz on the metrics port. */}}
{{- define "hostport.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
{{- end -}}

{{/* The webhook configurations' caBundle, for a Secret of your own. */}}
{{- define "hostport.caBundle" -}}
{{- if eq .Values.webhook.tls.mode "secret" }}
caBundle: {{ required "webhook.tls.secret.caBundle is required with webhook.tls.mode=secret" .Values.webhook.tls.secret.caBundle }}
{{- end }}
{{- end -}}
