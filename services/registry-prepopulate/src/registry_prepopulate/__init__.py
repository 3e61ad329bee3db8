"""registry-prepopulate: copy base images into the organization's registry (`operations.md`, section 5).

Modules: `settings` (environment and YAML items), `reference` (image names), `oci` (media types,
digests, manifests), `registry` (registry API v2 client), `layout` (OCI layouts and docker-save
archives), `copy` (`copy_image`), `__main__` (the `registry-prepopulate` command).
"""
