{{/* The chart's name, or nameOverride. */}}
{{- define "atlas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: fullnameOverride, else <release>-<chart> (once). */}}
{{- define "atlas.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "atlas.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "atlas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one role: (dict "root" $ "role" "api"). */}}
{{- define "atlas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atlas.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "atlas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "atlas.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "atlas.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "atlas.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "atlas.fullname" .) -}}
{{- end -}}

{{/* `config` as ATLAS_* variables: events.nats.url -> ATLAS_EVENTS__NATS__URL. */}}
{{- define "atlas.configData" -}}
{{- range $key, $value := .Values.config }}
{{ printf "ATLAS_%s" ($key | replace "." "__" | upper) }}: {{ if kindIs "slice" $value }}{{ toJson $value | quote }}{{ else }}{{ toString $value | quote }}{{ end }}
{{- end }}
{{- end -}}

{{/* The secrets as files, read through the `…_file` settings. */}}
{{- define "atlas.secretEnv" -}}
- name: ATLAS_DATABASE__URL_FILE
  value: /run/secrets/atlas/{{ .Values.secrets.keys.databaseUrl }}
- name: ATLAS_AUTH__JWT_SECRET_FILE
  value: /run/secrets/atlas/{{ .Values.secrets.keys.jwtSecret }}
- name: ATLAS_AUDIT__SIGNING_KEY_FILE
  value: /run/secrets/atlas/{{ .Values.secrets.keys.auditSigningKey }}
{{- end -}}

{{/* Volumes every Atlas container mounts: secrets, data dir, /tmp. */}}
{{- define "atlas.volumeMounts" -}}
- name: secrets
  mountPath: /run/secrets/atlas
  readOnly: true
- name: data
  mountPath: /var/lib/atlas
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* (dict "root" $ "secretName" NAME "dataSizeLimit" SIZE) */}}
{{- define "atlas.volumes" -}}
- name: secrets
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
- name: data
  emptyDir:
    {{- with .dataSizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod template of one role: (dict "root" $ "role" "api" "values" .Values.api) */}}
{{- define "atlas.podTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "atlas.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if not $root.Values.secrets.existingSecret }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
spec:
  serviceAccountName: {{ include "atlas.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  # Atlas drains in-flight requests and lets consumers and jobs finish for
  # server.shutdown_grace_secs (10 s by default) after SIGTERM.
  terminationGracePeriodSeconds: 30
  containers:
    - name: atlas
      image: {{ include "atlas.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["serve", "--role", {{ .role | quote }}]
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "atlas.fullname" $root }}
      env:
        {{- include "atlas.secretEnv" $root | nindent 8 }}
        - name: ATLAS_DATA_DIR
          value: /var/lib/atlas
        - name: ATLAS_SERVER__BIND
          value: "0.0.0.0:8080"
        {{- with $root.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet:
          path: {{ $root.Values.probes.startup.path }}
          port: http
        periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
        failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
      readinessProbe:
        httpGet:
          path: {{ $root.Values.probes.readiness.path }}
          port: http
        periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
        failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
      livenessProbe:
        httpGet:
          path: {{ $root.Values.probes.liveness.path }}
          port: http
        periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
        failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
      resources:
        {{- toYaml .values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "atlas.volumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "atlas.volumes" (dict "root" $root "secretName" (include "atlas.secretName" $root) "dataSizeLimit" .values.dataVolume.sizeLimit) | nindent 4 }}
  {{- with .values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
