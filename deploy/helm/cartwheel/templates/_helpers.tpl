{{/* Names, labels and the environment shared by every Cartwheel process. */}}

{{- define "cartwheel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cartwheel.fullname" -}}
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

{{- define "cartwheel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cartwheel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component (node or edge): pass (list $ "node"). */}}
{{- define "cartwheel.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "cartwheel.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "cartwheel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "cartwheel.secretName" -}}
{{- default (include "cartwheel.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Whether the edge verifies HS256 tokens: a secret given, or no other key. */}}
{{- define "cartwheel.hs256" -}}
{{- if eq .Values.auth.mode "jwt" -}}
{{- if or .Values.secrets.jwtHs256Secret (not (or .Values.auth.jwt.jwksUrl .Values.auth.jwt.publicKey)) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* Whether the edge verifies tokens with a public key file (from the Secret). */}}
{{- define "cartwheel.jwtPublicKey" -}}
{{- if and (eq .Values.auth.mode "jwt") .Values.auth.jwt.publicKey -}}true{{- end -}}
{{- end -}}

{{/* A variable from a key of the Secret. */}}
{{- define "cartwheel.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "cartwheel.secretName" (index . 0) }}
      key: {{ index . 2 }}
      {{- if index . 3 }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Whether the pods mount the Secret's files (NATS creds, NKey seed, certificates). */}}
{{- define "cartwheel.natsFiles" -}}
{{- if or (has .Values.nats.auth (list "creds" "nkey")) .Values.nats.tls.enabled .Values.nats.tls.clientCert -}}true{{- end -}}
{{- end -}}

{{/* What every process needs: NATS (URL, identity, TLS), names, logs, traces. */}}
{{- define "cartwheel.commonEnv" -}}
{{ include "cartwheel.secretEnv" (list . "CARTWHEEL_NATS_URL" "nats-url" false) }}
{{- if eq .Values.nats.auth "userPassword" }}
{{ include "cartwheel.secretEnv" (list . "CARTWHEEL_NATS_USER" "nats-user" false) }}
{{ include "cartwheel.secretEnv" (list . "CARTWHEEL_NATS_PASSWORD" "nats-password" false) }}
{{- else if eq .Values.nats.auth "token" }}
{{ include "cartwheel.secretEnv" (list . "CARTWHEEL_NATS_TOKEN" "nats-token" false) }}
{{- else if eq .Values.nats.auth "creds" }}
- name: CARTWHEEL_NATS_CREDS
  value: /etc/cartwheel/nats/nats.creds
{{- else if eq .Values.nats.auth "nkey" }}
- name: CARTWHEEL_NATS_NKEY
  value: /etc/cartwheel/nats/nats.nkey
{{- end }}
{{- if .Values.nats.tls.enabled }}
- name: CARTWHEEL_NATS_TLS_CA
  value: /etc/cartwheel/nats/nats-ca.pem
{{- end }}
{{- if .Values.nats.tls.clientCert }}
- name: CARTWHEEL_NATS_TLS_CERT
  value: /etc/cartwheel/nats/nats-client.pem
- name: CARTWHEEL_NATS_TLS_KEY
  value: /etc/cartwheel/nats/nats-client-key.pem
{{- end }}
- name: CARTWHEEL_PREFIX
  value: {{ .Values.prefix | quote }}
- name: CARTWHEEL_PARTITIONS
  value: {{ .Values.partitions | quote }}
- name: CARTWHEEL_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.otlpEndpoint }}
- name: CARTWHEEL_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The NATS files from the Secret: the volume (pod) and its mount (container). */}}
{{- define "cartwheel.natsVolume" -}}
- name: nats
  secret:
    secretName: {{ include "cartwheel.secretName" . }}
    defaultMode: 0400
    items:
      {{- if eq .Values.nats.auth "creds" }}
      - key: nats.creds
        path: nats.creds
      {{- else if eq .Values.nats.auth "nkey" }}
      - key: nats.nkey
        path: nats.nkey
      {{- end }}
      {{- if .Values.nats.tls.enabled }}
      - key: nats-ca.pem
        path: nats-ca.pem
      {{- end }}
      {{- if .Values.nats.tls.clientCert }}
      - key: nats-client.pem
        path: nats-client.pem
      - key: nats-client-key.pem
        path: nats-client-key.pem
      {{- end }}
{{- end -}}

{{- define "cartwheel.natsMount" -}}
- name: nats
  mountPath: /etc/cartwheel/nats
  readOnly: true
{{- end -}}

{{- define "cartwheel.affinity" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $given := index . 2 -}}
{{- if $given -}}
{{ toYaml $given }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "cartwheel.selectorLabels" (list $root $component) | nindent 12 }}
{{- end -}}
{{- end -}}
