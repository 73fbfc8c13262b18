"""Deploys a built Flash app to a running `flash server` and calls every function.

Used by scripts/demo.sh until `flash deploy` lands: it drives the same RunPod-compatible
GraphQL operations (create app and environment, upload the artifact, activate the build,
save one endpoint per resource config, publish `resources_endpoints`) and then calls the
queue endpoint through the serverless gateway and the load-balanced one through its proxy.
Standard library only.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def request(method, url, key=None, body=None, content_type="application/json", timeout=120):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def gql(server, key, query, variables):
    status, body = request("POST", f"{server}/graphql", key, {"query": query, "variables": variables})
    if status != 200 or body.get("errors"):
        sys.exit(f"GraphQL failed ({status}): {body}")
    return body["data"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--key-file", required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--manifest", required=True)
    a = p.parse_args()
    key = open(a.key_file).read().strip()
    manifest = json.load(open(a.manifest))
    artifact = open(a.artifact, "rb").read()
    app_name = manifest["project_name"]

    app = gql(a.server, key, "mutation createFlashApp($input: CreateFlashAppInput!) { createFlashApp(input: $input) { id name } }",
              {"input": {"name": app_name}})["createFlashApp"]
    env = gql(a.server, key, "mutation createFlashEnvironment($input: CreateFlashEnvironmentInput!) { createFlashEnvironment(input: $input) { id name } }",
              {"input": {"flashAppId": app["id"], "name": "demo"}})["createFlashEnvironment"]
    ticket = gql(a.server, key, "mutation PrepareArtifactUpload($input: PrepareFlashArtifactUploadInput!) { prepareFlashArtifactUpload(input: $input) { uploadUrl objectKey expiresAt } }",
                 {"input": {"flashAppId": app["id"], "tarballSize": len(artifact)}})["prepareFlashArtifactUpload"]
    status, body = request("PUT", ticket["uploadUrl"], None, artifact, "application/gzip")
    if status >= 300:
        sys.exit(f"artifact upload failed ({status}): {body}")
    build = gql(a.server, key, "mutation FinalizeArtifactUpload($input: FinalizeFlashArtifactUploadInput!) { finalizeFlashArtifactUpload(input: $input) { id manifest } }",
                {"input": {"flashAppId": app["id"], "objectKey": ticket["objectKey"], "manifest": manifest}})["finalizeFlashArtifactUpload"]
    gql(a.server, key, "mutation deployBuildToEnvironment($input: DeployBuildToEnvironmentInput!) { deployBuildToEnvironment(input: $input) { id name } }",
        {"input": {"flashEnvironmentId": env["id"], "flashBuildId": build["id"]}})
    print(f"app {app_name}: environment {env['id']}, build {build['id']} ({len(artifact)} bytes)")

    endpoints, urls = {}, {}
    for name, res in manifest["resources"].items():
        lb = res["is_load_balanced"]
        envs = {"FLASH_RESOURCE_NAME": name, "FLASH_APP": app_name, "FLASH_ENV": "demo",
                "FLASH_ENVIRONMENT_ID": env["id"], "RUNPOD_API_KEY": key}
        if lb:
            envs["FLASH_DISABLE_RP_AUTH"] = "true"
        inp = {"name": name, "type": "LB" if lb else "QB", "workersMin": res["workersMin"], "workersMax": res["workersMax"],
               "idleTimeout": res["idleTimeout"], "scalerType": res["scalerType"], "scalerValue": res["scalerValue"],
               "flashEnvironmentId": env["id"],
               "template": {"name": f"{app_name}-{name}", "imageName": "flash-host",
                            "env": [{"key": k, "value": v} for k, v in envs.items()]}}
        ep = gql(a.server, key, "mutation saveEndpoint($input: EndpointInput!) { saveEndpoint(input: $input) { id name type } }",
                 {"input": inp})["saveEndpoint"]
        endpoints[name] = ep["id"]
        urls[name] = f"{a.server}/lb/{ep['id']}" if lb else f"{a.server}/v2/{ep['id']}"
        print(f"  endpoint {name:<12} {ep['type']}  {urls[name]}")
    manifest["resources_endpoints"] = urls
    gql(a.server, key, "mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) { updateFlashBuildManifest(input: $input) { id } }",
        {"input": {"flashBuildId": build["id"], "manifest": manifest}})

    # Wait (bounded) for load-balanced endpoints to answer /ping.
    for name, res in manifest["resources"].items():
        if res["is_load_balanced"]:
            deadline = time.time() + 120
            while True:
                status, _ = request("GET", f"{urls[name]}/ping", key, timeout=5)
                if status == 200:
                    break
                if time.time() > deadline:
                    sys.exit(f"endpoint {name} did not become ready")
                time.sleep(0.5)

    failures = 0
    for name, res in manifest["resources"].items():
        for f in res["functions"]:
            if res["is_load_balanced"]:
                path, method = f["http_path"], f["http_method"]
                body = {"text": "what a great day"} if method != "GET" else None
                status, out = request(method, urls[name] + path, key, body)
                print(f"{method} {path} -> {status} {json.dumps(out)}")
                failures += status != 200
            else:
                kwargs = {"embed": {"text": "hello flash", "dims": 8},
                          "similarity": {"a": "good day", "b": "great day"}}.get(f["name"], {})
                status, out = request("POST", f"{urls[name]}/runsync", key,
                                      {"input": {"function_name": f["name"], "kwargs": kwargs}}, timeout=180)
                print(f"runsync {f['name']} -> {out.get('status') if isinstance(out, dict) else status} "
                      f"{json.dumps(out.get('output') if isinstance(out, dict) else out)}")
                failures += not (isinstance(out, dict) and out.get("status") == "COMPLETED")

    for name, ep in endpoints.items():
        gql(a.server, key, "mutation deleteEndpoint($id: String!) { deleteEndpoint(id: $id) }", {"id": ep})
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
