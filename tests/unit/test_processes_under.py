"""`cluster down NAME` stops the processes of NAME only, not those of NAME-other."""

from blackstart.clusters.local.provider import names_folder

E2E = "/root/.cache/blackstart/kwok/clusters/e2e"


def test_a_path_inside_the_folder_is_named() -> None:
    argv = ["etcd", "--data-dir", f"{E2E}/etcd", f"--config={E2E}/kwok.yaml"]
    assert names_folder(argv, E2E)
    assert names_folder(["kwokctl", "--workdir", E2E], E2E)
    assert names_folder(["coredns", f"--root={E2E}"], E2E)


def test_a_cluster_whose_name_starts_with_this_ones_is_not_named() -> None:
    other = "/root/.cache/blackstart/kwok/clusters/e2e-catalogue"
    argv = ["kube-apiserver", "--etcd-servers=http://x", f"--kubeconfig={other}/kubeconfig.yaml"]
    assert not names_folder(argv, E2E)
    assert not names_folder(["kwokctl", "--workdir", other], E2E)
