// Mounts LiveLog (the reana-ui patch's src/components/LiveLog.js) as the patch's
// WorkflowLogs does: in semantic-ui-react Tab panes (engine logs: `kind=workflow`; job
// logs: every job, `job` from the route, `jobchange` changes it), under StrictMode.
// What happens is recorded on window.__host for tests/test_reana_ui_host.py.
import { StrictMode, useCallback, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { Button, Tab } from "semantic-ui-react";

import LiveLog from "~/components/LiveLog";

const host = (window.__host = { ends: [], jobChanges: [], effects: 0 });
const workflow = new URLSearchParams(window.location.search).get("workflow");
const streamUrl = (params) =>
  `${window.location.origin}/api/workflows/${workflow}/logs/stream?${new URLSearchParams(params)}`;

function StrictModeProbe() {
  useEffect(() => {
    host.effects += 1; // 2 once mounted: StrictMode mounted, unmounted and mounted again
  }, []);
  return null;
}

function WorkflowLogs() {
  const [job, setJob] = useState(null);
  const handleEnd = useCallback((detail) => host.ends.push(detail), []);
  const handleJobChange = useCallback((next) => {
    host.jobChanges.push(next);
    setJob(next);
  }, []);
  const panes = [
    {
      menuItem: "Engine logs",
      render: () => (
        <LiveLog src={streamUrl({ kind: "workflow" })} onEnd={handleEnd} className="logs" />
      ),
    },
    {
      menuItem: "Job logs",
      render: () => (
        <LiveLog
          src={streamUrl({})}
          job={job}
          onJobChange={handleJobChange}
          onEnd={handleEnd}
          className="logs"
        />
      ),
    },
    { menuItem: "Workspace", render: () => <p>No live log here.</p> },
  ];
  return <Tab menu={{ secondary: true, pointing: true }} panes={panes} defaultActiveIndex={1} />;
}

function App() {
  const [shown, setShown] = useState(true);
  return (
    <>
      <StrictModeProbe />
      <Button onClick={() => setShown(!shown)}>{shown ? "Unmount" : "Mount"}</Button>
      {shown && <WorkflowLogs />}
    </>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
