#!/bin/sh
# The Vagrant VM with no internet: apt and pip use another lab host's mirrors, then Ansible
# is installed from that index (Vagrantfile, DEMOLAB_MIRROR_HOST).
#   use-mirror.sh APT_REPO_URL PIP_INDEX_URL "PIP ARGS"
set -eu
apt_repo=$1 index=$2 pip_args=$3
# The mirror is apt's only source; the machine's own sources are left as they are, unread.
mkdir -p /etc/apt/demolab-mirror.d
echo "deb [trusted=yes] $apt_repo ./" > /etc/apt/demolab-mirror.d/mirror.list
cat > /etc/apt/apt.conf.d/90demolab-mirror <<CONF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "/etc/apt/demolab-mirror.d";
CONF
# Plain HTTP on the lab network: pip ignores such an index unless its host is trusted.
index_host=${index#*://}
index_host=${index_host%%[:/]*}
printf '[global]\nindex-url = %s\ntrusted-host = %s\n' "$index" "$index_host" > /etc/pip.conf
if ! command -v ansible >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
  # shellcheck disable=SC2086 # the Vagrantfile's pip arguments, as ansible_local passes them
  pip install $pip_args
fi
