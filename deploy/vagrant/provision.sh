#!/usr/bin/env bash
# Vagrant provisioning: README setup + tests, then the exporter, Prometheus and Grafana.
set -euo pipefail
cd /vagrant

./bootstrap.sh test

# Grafana comes from Grafana's own apt repository (not in Debian/Ubuntu).
if ! command -v grafana-server >/dev/null; then
    apt-get install -y -qq apt-transport-https gnupg wget
    wget -qO /usr/share/keyrings/grafana.key https://apt.grafana.com/gpg.key
    echo "deb [signed-by=/usr/share/keyrings/grafana.key] https://apt.grafana.com stable main" \
        > /etc/apt/sources.list.d/grafana.list
    apt-get update -qq && apt-get install -y -qq grafana
fi

install -D -m 0644 deploy/vagrant/traffic.sh /usr/local/lib/bpftools/traffic.sh
cat > /etc/systemd/system/bpftools-traffic.service <<UNIT
[Unit]
Description=Demo traffic for the bpftools dashboards (namespaces only)
[Service]
ExecStart=/bin/bash /usr/local/lib/bpftools/traffic.sh
ExecStopPost=/bin/bash /usr/local/lib/bpftools/traffic.sh --cleanup
Restart=always
UNIT
# The exporter: the systemd unit users install (deploy/bpftools-serve.service), with this VM's
# bpftools and a config for the demo traffic's namespaces.
ln -sfn /vagrant/.venv/bin/bpftools /usr/local/bin/bpftools
install -m 0644 deploy/bpftools-serve.service /etc/systemd/system/bpftools-serve.service
install -d /etc/systemd/system/bpftools-serve.service.d
printf '[Unit]\nAfter=bpftools-traffic.service\n' > /etc/systemd/system/bpftools-serve.service.d/vagrant.conf
install -d /etc/bpftools
cat > /etc/bpftools/serve.toml <<TOML
listen = "127.0.0.1:9654"
drops = true
all_netns = true
encap = ["vdemo-b/vb"]
decap = ["vdemo-b/vb"]
allow_remote = ["10.77.0.1/32"]
TOML

cat > /etc/prometheus/prometheus.yml <<PROM
global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
  - /vagrant/dashboards/alerts.yml
scrape_configs:
  - job_name: bpftools
    static_configs:
      - targets: ["127.0.0.1:9654"]
PROM

install -D -m 0644 dashboards/provisioning/dashboards.yml /etc/grafana/provisioning/dashboards/bpftools.yml
install -D -m 0644 dashboards/provisioning/datasources.yml /etc/grafana/provisioning/datasources/bpftools.yml
install -d /var/lib/grafana/dashboards/bpftools
install -m 0644 dashboards/*.json /var/lib/grafana/dashboards/bpftools/

systemctl daemon-reload
systemctl enable --now bpftools-traffic bpftools-serve
systemctl restart prometheus
systemctl enable --now grafana-server
systemctl restart grafana-server
echo "Grafana: http://localhost:3000 (admin/admin)   Prometheus: http://localhost:9090"
