"""Time keeping for the Cfg templates, as metadata.TemplateHelper['clock']."""

__export__ = ["refclock"]

#: the PTP clock device a hypervisor gives its guests, by systemd-detect-virt name
PTP_DEVICES = {"kvm": "/dev/ptp_kvm", "microsoft": "/dev/ptp_hyperv"}


def refclock(virt):
    """chrony's refclock line for the hypervisor's clock, or "" when it has none."""
    device = PTP_DEVICES.get(virt.strip())
    return f"refclock PHC {device} poll 2" if device else ""
