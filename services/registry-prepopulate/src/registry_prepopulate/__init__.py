"""registry-prepopulate: copy base images into the organization's registry (`operations.md`, section 5).

Modules: `settings` (environment and YAML items), `layout` (OCI layouts and docker-save archives),
`copy` (`copy_image`), `__main__` (the `registry-prepopulate` command). Image names, media types,
digests, manifests and the registry API v2 client are shared with the scheduler's registry garbage
collection: `backend_common.registry` (`reference`, `oci`, `client`).
"""
