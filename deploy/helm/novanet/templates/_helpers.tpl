{{/* Names and labels shared by the templates. */}}

{{- define "novanet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "novanet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "novanet.agentSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "novanet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "novanet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "novanet.agentImage" -}}
{{- printf "%s:%s" .Values.image.agent.repository (default .Chart.AppVersion .Values.image.agent.tag) -}}
{{- end -}}

{{/* The FRR sidecar runs with native routing, or whenever routing is switched on. */}}
{{- define "novanet.frrEnabled" -}}
{{- if or (eq .Values.config.routingMode "native") .Values.routing.enabled -}}true{{- end -}}
{{- end -}}

{{/* The agent's configuration file, in the camelCase keys the agent parses (unknown keys are an error). */}}
{{- define "novanet.agentConfig" -}}
{{- $c := .Values.config -}}
{{- $r := .Values.routing -}}
{{- $bfd := dict "enabled" $r.bfd.enabled "minRxMs" (int $r.bfd.minRxMs) "minTxMs" (int $r.bfd.minTxMs) "multiplier" (int $r.bfd.multiplier) -}}
{{- $peers := list -}}
{{- range $r.peers -}}
{{- $p := dict "address" .address -}}
{{- if .asn }}{{- $_ := set $p "asn" (int64 .asn) -}}{{- end -}}
{{- $peers = append $peers $p -}}
{{- end -}}
{{- $routing := dict "enabled" $r.enabled "protocol" $r.protocol "asn" (int64 $r.asn) "bfd" $bfd "peers" $peers -}}
{{- if $r.controlPlaneVIP }}{{- $_ := set $routing "controlPlaneVIP" $r.controlPlaneVIP -}}{{- end -}}
{{- $cfg := dict
    "podCIDRSource" $c.podCIDRSource
    "clusterCIDR" $c.clusterCIDR
    "nodeCIDRMaskSize" (int $c.nodeCIDRMaskSize)
    "routingMode" $c.routingMode
    "tunnelProtocol" $c.tunnelProtocol
    "mtu" (int $c.mtu)
    "defaultDeny" $c.defaultDeny
    "l4lb" (dict "enabled" .Values.l4lb.enabled)
    "routing" $routing
    "socketPath" $c.socketPath
    "stateDir" $c.stateDir
    "bpffsRoot" $c.bpffsRoot
    "cni" (dict "binDir" "/host/opt/cni/bin" "confDir" "/host/etc/cni/net.d")
-}}
{{- if .Values.agent.cleanupOnUninstall }}
{{- $_ := set $cfg "cleanupOnUninstall" (dict "namespace" .Release.Namespace "daemonSet" (include "novanet.fullname" .)) -}}
{{- end }}
{{- toYaml $cfg -}}
{{- end -}}
