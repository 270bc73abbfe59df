# frozen_string_literal: true
#
# Static check of vagrant/Vagrantfile without Vagrant or a hypervisor: evaluates it with a
# stub of Vagrant.configure("2") that records every config call, rejects method names
# Vagrant (2.3) or its providers (VirtualBox, vagrant-libvirt 0.11) do not have, and
# asserts the facts the box depends on. Run by scripts/check-vagrantfile.
#
#   ruby vagrant/validate.rb [--self-test] [VAGRANTFILE]
#
# --self-test also evaluates broken copies of the Vagrantfile (a typo, a removed
# provider, too little memory, ...) and fails unless every one of them is rejected.

REPO_ROOT = File.expand_path("..", __dir__)
VAGRANT_DIR = File.join(REPO_ROOT, "vagrant")

BOX = "debian/bookworm64"
GUEST_PATH = "/netlab"
MIN_MEMORY_MB = 2048
CPUS = 2
SETUP = "/netlab/scripts/setup"
# Host artefacts the box must build itself; each must be matched by an rsync exclude.
MUST_EXCLUDE = %w[.venv netlab.egg-info __pycache__ .mypy_cache .ruff_cache .pytest_cache .vagrant .vm-results].freeze

RSYNC_SKIP_WARNED = [false] # said once, not again for each self-test copy

class StubError < StandardError; end

# Records attribute assignments and calls on one config namespace; unknown names fail.
class Recorder
  attr_reader :label, :values, :calls

  def initialize(label, attributes, methods = [])
    @label = label
    @attributes = attributes.map(&:to_s)
    @methods = methods.map(&:to_s)
    @values = {}
    @calls = []
  end

  def method_missing(name, *args, **kwargs, &block)
    n = name.to_s
    if n.end_with?("=") && @attributes.include?(n.chomp("="))
      @values[n.chomp("=")] = args.first
    elsif @attributes.include?(n) && args.empty? && kwargs.empty?
      @values[n]
    elsif @methods.include?(n)
      @calls << [n, args, kwargs]
      nil
    else
      where = caller_locations.find { |l| l.path.end_with?("Vagrantfile") }
      at = where ? " (Vagrantfile line #{where.lineno})" : ""
      raise StubError, "#{@label}: no setting #{n.inspect}#{at}; a typo? " \
                       "(if Vagrant has it, add it to the lists in vagrant/validate.rb)"
    end
  end

  def respond_to_missing?(_name, _include_private = false)
    true
  end
end

VM_ATTRIBUTES = %w[
  allowed_synced_folder_types allow_fstab_modification allow_hosts_modification base_mac base_address
  boot_timeout box ignore_box_vagrantfile box_check_update box_url box_server_url box_version
  box_download_ca_cert box_download_ca_path box_download_checksum box_download_checksum_type
  box_download_client_cert box_download_insecure box_download_location_trusted box_download_options
  communicator graceful_halt_timeout guest hostname post_up_message usable_port_range clone
].freeze
SSH_ATTRIBUTES = %w[
  username password host port guest_port private_key_path keys_only paranoid verify_host_key
  forward_agent forward_x11 forward_env insert_key keep_alive shell export_command_template
  sudo_command compression dsa_authentication extra_args remote_user connect_timeout config
].freeze
VIRTUALBOX_ATTRIBUTES = %w[
  auto_nat_dns_proxy check_guest_additions default_nic_type destroy_unused_network_interfaces gui
  linked_clone linked_clone_snapshot name functional_vboxsf memory cpus
].freeze
VIRTUALBOX_METHODS = %w[customize network_adapter].freeze
LIBVIRT_ATTRIBUTES = %w[
  uri driver host port connect_via_ssh socket username password id_ssh_key_file proxy_command
  forward_ssh_port storage_pool_name storage_pool_path snapshot_pool_name random_hostname
  management_network_device management_network_name management_network_address
  management_network_mode management_network_mac management_network_guest_ipv6
  management_network_autostart management_network_pci_bus management_network_pci_slot
  management_network_domain management_network_mtu management_network_keep
  management_network_driver_iommu system_uri default_prefix title description uuid memory nodeset
  memory_backing memtunes channel cpus cpuset cpu_mode cpu_model cpu_fallback cpu_features
  cpu_topology cpu_affinity shares features features_hyperv clock_offset clock_timers
  launchsecurity_data numa_nodes loader nvram boot_order machine_type machine_arch
  machine_virtual_size disk_bus disk_device disk_address_type disk_controller_model
  disk_driver_opts nic_model_type nested volume_cache kernel cmd_line initrd dtb emulator_path
  graphics_type graphics_autoport graphics_port graphics_websocket graphics_passwd graphics_ip
  graphics_gl video_type video_vram video_accel3d keymap kvm_hidden sound_type tpm_model tpm_type
  tpm_path tpm_version sysinfo memballoon_enabled memballoon_model memballoon_pci_bus
  memballoon_pci_slot nic_adapter_count suspend_mode autostart mgmt_attach qemu_use_session
  qemu_use_agent
].freeze
LIBVIRT_METHODS = %w[
  boot cpu_feature hyperv_feature clock_timer cputopology cpuaffinitiy memorybacking memtune
  launchsecurity input channel random pci watchdog usb_controller usb redirdev redirfilter
  smartcard disk_driver storage qemuargs qemuenv serial
].freeze
PROVIDERS = {
  "virtualbox" => [VIRTUALBOX_ATTRIBUTES, VIRTUALBOX_METHODS],
  "libvirt" => [LIBVIRT_ATTRIBUTES, LIBVIRT_METHODS],
}.freeze
PROVISIONER_TYPES = %w[shell file ansible ansible_local docker podman salt puppet chef_solo].freeze

# config.vm: the calls with structure are real methods; plain settings go to Recorder.
class VmRecorder < Recorder
  attr_reader :synced_folders, :providers, :provisioners

  def initialize
    super("config.vm", VM_ATTRIBUTES, %w[network disk cloud_init])
    @synced_folders = []
    @providers = {}
    @provisioners = []
  end

  def synced_folder(hostpath, guestpath, options = nil)
    @synced_folders << { host: hostpath, guest: guestpath, opts: options || {} }
  end

  def provider(name, &block)
    name = name.to_s
    lists = PROVIDERS[name] or raise StubError, "config.vm.provider #{name.inspect}: not a provider this box supports"
    rec = (@providers[name] ||= Recorder.new("#{name} provider", *lists))
    block&.call(rec, nil)
  end

  def provision(name, **options, &block)
    type = (options[:type] || name).to_s
    unless PROVISIONER_TYPES.include?(type)
      raise StubError, "config.vm.provision #{name.inspect}: no provisioner type #{type.inspect}"
    end
    @provisioners << { name: name.to_s, type: type, opts: options }
    block&.call(Recorder.new("provisioner #{name}", %w[inline path args privileged name]))
  end

  # Multi-machine mode (NETLAB_BOXES >= 2): each machine's own settings.
  def machines
    @machines ||= {}
  end

  def define(name, **_options, &block)
    box = MachineRecorder.new(name.to_s)
    block&.call(box)
    machines[name.to_s] = box
  end
end

# A machine of config.vm.define: its own config.vm (hostname, networks).
class MachineRecorder
  attr_reader :vm

  def initialize(name)
    @vm = Recorder.new("config.vm.define #{name}", VM_ATTRIBUTES, %w[network])
  end

  def method_missing(name, *)
    raise StubError, "a machine's config.#{name}: the stub knows only vm there (a typo?)"
  end

  def respond_to_missing?(_name, _include_private = false)
    true
  end
end

class ConfigRecorder
  attr_reader :vm, :ssh

  def initialize
    @vm = VmRecorder.new
    @ssh = Recorder.new("config.ssh", SSH_ATTRIBUTES)
  end

  def method_missing(name, *)
    raise StubError, "config.#{name} is not a config namespace the stub knows (a typo?)"
  end

  def respond_to_missing?(_name, _include_private = false)
    true
  end
end

module Vagrant
  @configs = []
  class << self
    attr_accessor :configs

    def configure(version)
      raise StubError, "Vagrant.configure(#{version.inspect}): expected \"2\"" unless version.to_s == "2"
      cfg = ConfigRecorder.new
      yield cfg
      @configs << cfg
    end

    def has_plugin?(*)
      false
    end
  end
end

# Record WHAT as checked, or fail with FAILURE (default: "not true: WHAT").
def check(facts, ok, what, failure = nil)
  raise StubError, failure || "not true: #{what}" unless ok

  facts << what
end

def evaluate(source, path)
  Vagrant.configs = []
  Module.new.module_eval(source, path, 1)
  configs = Vagrant.configs
  raise StubError, "Vagrant.configure(\"2\") was called #{configs.size} times, expected once" unless configs.size == 1

  vm = configs.first.vm
  facts = []

  check(facts, vm.values["box"] == BOX, "box is #{BOX} (saw #{vm.values['box'].inspect})")

  PROVIDERS.each_key do |name|
    prov = vm.providers[name]
    raise StubError, "no config.vm.provider #{name.inspect} block" unless prov

    mem = prov.values["memory"]
    cpus = prov.values["cpus"]
    check(facts, mem.is_a?(Integer) && mem >= MIN_MEMORY_MB,
          "#{name}: memory >= #{MIN_MEMORY_MB} MiB (saw #{mem.inspect})")
    check(facts, cpus == CPUS, "#{name}: cpus = #{CPUS} (saw #{cpus.inspect})")
  end
  check(facts, vm.providers["libvirt"].values["nested"] != true, "libvirt: nested virtualisation not required")

  netlab = vm.synced_folders.select { |f| f[:guest] == GUEST_PATH }
  raise StubError, "no synced folder at #{GUEST_PATH}" if netlab.empty?
  raise StubError, "#{netlab.size} synced folders at #{GUEST_PATH}" if netlab.size > 1

  folder = netlab.first
  opts = folder[:opts]
  host = File.expand_path(folder[:host].to_s, VAGRANT_DIR)
  check(facts, host == REPO_ROOT, "#{GUEST_PATH} is the repository root (host path #{folder[:host].inspect} -> #{host})")
  check(facts, opts[:disabled] != true, "#{GUEST_PATH} is not disabled")
  check(facts, opts[:type].to_s == "rsync", "#{GUEST_PATH} is synced with rsync (saw type #{opts[:type].inspect})")
  others = vm.synced_folders.reject { |f| f[:guest] == GUEST_PATH || f[:opts][:disabled] == true }
  check(facts, others.empty?, "no other synced folder is enabled (saw #{others.map { |f| f[:guest] }.inspect})")

  excludes = Array(opts[:rsync__exclude]).map(&:to_s)
  MUST_EXCLUDE.each do |name|
    hit = excludes.find { |e| File.fnmatch?(e.delete_prefix("/").chomp("/"), name) }
    check(facts, hit, "rsync excludes #{name} (by #{hit.inspect})",
          "rsync__exclude does not exclude #{name}: a host-built #{name} would be synced into the box")
  end
  args = Array(opts[:rsync__args]).map(&:to_s)
  check(facts, !args.include?("--delete-excluded"),
        "rsync args keep the box's excluded .venv (no --delete-excluded)")

  setup = vm.provisioners.select { |p| p[:type] == "shell" && p[:opts][:inline].to_s.split.first == SETUP }
  raise StubError, "no shell provisioner whose inline command is #{SETUP}" if setup.empty?

  if which("rsync")
    facts.concat(rsync_dry_run(excludes))
  elsif !RSYNC_SKIP_WARNED.first
    warn "  SKIP  rsync --dry-run of this checkout: rsync is not installed"
    RSYNC_SKIP_WARNED[0] = true
  end

  prov = setup.first
  check(facts, true, "provisioner #{prov[:name].inspect}: shell, inline #{prov[:opts][:inline].inspect}")
  check(facts, prov[:opts].fetch(:privileged, true) == true, "provisioner runs as root (privileged)")
  check(facts, File.executable?(File.join(REPO_ROOT, "scripts/setup")), "scripts/setup exists and is executable")
  loads = vm.provisioners.any? { |p| p[:type] == "shell" && p[:opts][:inline].to_s.include?("modprobe br_netfilter") }
  check(facts, loads, "a provisioner loads br_netfilter (tests/vm need it in the box)",
        "no shell provisioner runs `modprobe br_netfilter`: tests/vm would not run in the box")
  facts
end

# NETLAB_BOXES=N: N machines netlab1…N, each with its own address on one private network
# (the common settings, checked by evaluate, apply to each).
def check_boxes(source, path, count)
  old = ENV.fetch("NETLAB_BOXES", nil)
  ENV["NETLAB_BOXES"] = count.to_s
  evaluate(source, path)
  machines = Vagrant.configs.first.vm.machines
  facts = []
  names = (1..count).map { |i| "netlab#{i}" }
  check(facts, machines.keys == names, "NETLAB_BOXES=#{count}: machines #{names.join(', ')} (saw #{machines.keys.inspect})")
  ips = machines.map do |name, box|
    nets = box.vm.calls.select { |c, args, _| c == "network" && args.first.to_s == "private_network" }
    check(facts, nets.size == 1, "#{name}: one private network (saw #{nets.size})")
    check(facts, box.vm.values["hostname"] == name, "#{name}: hostname #{name}")
    nets.first[2][:ip].to_s
  end
  check(facts, ips.uniq.size == count && ips.map { |ip| ip.split(".")[0, 3] }.uniq.size == 1,
        "NETLAB_BOXES=#{count}: distinct addresses on one /24 (#{ips.join(', ')})")
  facts
ensure
  old.nil? ? ENV.delete("NETLAB_BOXES") : ENV["NETLAB_BOXES"] = old
end

def which(cmd)
  ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, cmd) }.find { |f| File.executable?(f) }
end

# What rsync itself would send with these excludes (plus Vagrant's own .vagrant/), from
# this checkout: no host artefact may be in the list, and the box's entry points must be.
def rsync_dry_run(excludes)
  require "open3"
  require "tmpdir"
  out = Dir.mktmpdir("check-vagrantfile-") do |dest|
    cmd = ["rsync", "--archive", "--copy-links", "--dry-run", "--out-format=%n"]
    (([".vagrant/"] + excludes).uniq).each { |e| cmd.push("--exclude", e) }
    o, e, st = Open3.capture3(*cmd, "#{REPO_ROOT}/", dest)
    raise StubError, "rsync --dry-run of the checkout failed: #{e.strip}" unless st.success?

    o
  end
  files = out.lines.map(&:chomp)
  leaked = files.select do |f|
    f.split("/").any? { |part| MUST_EXCLUDE.include?(part) || part.end_with?(".egg-info") }
  end
  raise StubError, "rsync would sync host artefacts into the box: #{leaked.first(5).join(', ')}" unless leaked.empty?

  wanted = %w[scripts/setup scripts/test scripts/demo pyproject.toml netlab/cli.py]
  missing = wanted - files
  raise StubError, "rsync would not sync #{missing.join(', ')}" unless missing.empty?

  ["rsync --dry-run of this checkout: #{files.size} entries, none of #{MUST_EXCLUDE.join(' ')} *.egg-info; " \
   "#{wanted.join(' ')} included"]
end

SELF_TEST_MUTATIONS = {
  "typo in a config.vm setting" => [/config\.vm\.hostname\b/, "config.vm.hostnme"],
  "typo in a VirtualBox setting" => [/\bvb\.memory\b/, "vb.memroy"],
  "typo in a libvirt setting" => [/\blibvirt\.cpus\b/, "libvirt.cpu"],
  "libvirt provider removed" => [/^ *config\.vm\.provider :libvirt do.*?^ *end\n/m, ""],
  "VirtualBox provider removed" => [/^ *config\.vm\.provider :virtualbox do.*?^ *end\n/m, ""],
  "VirtualBox memory 1 GiB" => [/vb\.memory = \d+/, "vb.memory = 1024"],
  "another box" => [%r{"debian/bookworm64"}, '"debian/bullseye64"'],
  ".venv synced" => [%r{\s*"\.venv/",\n}, "\n"],
  "synced elsewhere" => [%r{"/netlab",}, '"/srv/netlab",'],
  "setup not run" => [%r{inline: "/netlab/scripts/setup"}, 'inline: "true"'],
  "setup not as root" => [/privileged: true/, "privileged: false"],
  "br_netfilter not loaded" => [/modprobe br_netfilter/, "true"],
}.freeze

def self_test(source, path)
  SELF_TEST_MUTATIONS.map do |what, (pattern, replacement)|
    n = source.scan(pattern).size
    raise StubError, "self-test #{what.inspect}: pattern #{pattern.inspect} matches #{n} times, not once" unless n == 1

    begin
      evaluate(source.sub(pattern, replacement), path)
    rescue StubError, NoMethodError, NameError => e
      "rejected #{what}: #{e.message.lines.first.strip}"
    else
      raise StubError, "self-test: a Vagrantfile with #{what} was accepted"
    end
  end
end

if $PROGRAM_NAME == __FILE__
  self_testing = ARGV.delete("--self-test")
  path = File.expand_path(ARGV.first || File.join(VAGRANT_DIR, "Vagrantfile"))
  source = File.read(path)
  begin
    evaluate(source, path).each { |f| puts "  ok  #{f}" }
    check_boxes(source, path, 2).each { |f| puts "  ok  #{f}" }
    self_test(source, path).each { |f| puts "  ok  #{f}" } if self_testing
  rescue StubError, NoMethodError, NameError, ArgumentError => e
    warn "check-vagrantfile: #{File.basename(path)}: #{e.message}"
    exit 1
  end
end
